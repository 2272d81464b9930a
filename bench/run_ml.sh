#!/bin/sh
# Runs the ALS and logistic-regression benchmarks next to their Python peers,
# on the same data, in one go. Usage:
#   bench/run_ml.sh <build-dir> [als-iterations] [threads]
# Needs /usr/bin/python3 with numpy, scipy, scikit-learn; writes scratch files
# to ${TMPDIR:-/tmp}. Prints each program's RESULT line last.
set -eu
B=${1:?build dir with bench_als and bench_logreg}
ITERS=${2:-10}
THREADS=${3:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${SX_DATA_DIR:-$HERE/../../shared/data}
T=${TMPDIR:-/tmp}/sx-bench-ml.$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT INT TERM
export OPENBLAS_NUM_THREADS=$THREADS

echo "== ALS, MovieLens small, $ITERS iterations, $THREADS threads"
"$B/bench_als" movielens "$DATA/movielens_small_ratings.csv" "$T/ml.bin" "$ITERS" "$THREADS"
/usr/bin/python3 "$HERE/als_ref.py" "$T/ml.bin" "$ITERS"

echo "== ALS, synthetic 50k x 20k, $ITERS iterations, $THREADS threads"
"$B/bench_als" synth "$T/synth.bin" "$ITERS" "$THREADS"
/usr/bin/python3 "$HERE/als_ref.py" "$T/synth.bin" "$ITERS"
rm -f "$T/synth.bin" "$T/ml.bin"

echo "== logistic regression, 1M x 32, $THREADS threads"
"$B/bench_logreg" "$T/lr.bin" "$THREADS"
/usr/bin/python3 "$HERE/logreg_ref.py" "$T/lr.bin"
