#!/bin/sh
# Sextant's HNSW, hnswlib and faiss IndexHNSWFlat on the same ANN files, one after
# the other in one invocation (the machine's speed drifts: compare within a run).
#
#   bench/run_hnsw.sh BUILD_DIR [prefix=synth-200k-d64] [repeats=3] [build_threads=2]
#
# Data: $BENCH_DATA (default ../shared/bench/data, relative to the repository);
# written by `/usr/bin/python3 ../shared/bench/ann_data.py` when missing.
# $BENCH_METRIC=ip for the ALS item factors (bench/recommend_bench.py factors DIR, then
# BENCH_DATA=DIR BENCH_METRIC=ip bench/run_hnsw.sh BUILD_DIR movielens-als-k32 15 2).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: run_hnsw.sh BUILD_DIR [prefix] [repeats] [threads]}
prefix=${2:-synth-200k-d64}
repeats=${3:-3}
threads=${4:-2}
export BENCH_DATA="${BENCH_DATA:-$here/../shared/bench/data}"
if [ ! -f "$BENCH_DATA/$prefix.base.fvecs" ]; then
	/usr/bin/python3 "$here/../shared/bench/ann_data.py"
fi
echo "== sextant"
"$build/bench_hnsw" "$prefix" "$repeats" "$threads"
echo "== hnswlib, faiss"
/usr/bin/python3 "$here/bench/hnsw_compare.py" "$prefix" "$repeats" "$threads"
