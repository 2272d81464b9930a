#!/bin/sh
# ETS benchmark: Sextant (bench_ets) and statsmodels (bench/ets_ref.py) on the
# same series in one invocation.
# usage: bench/run_ets.sh BUILD_DIR [nseries=10000] [threads=2] [py_sample=200]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?build dir}
ns=${2:-10000}
th=${3:-2}
py=${4:-200}
data="$here/../../shared/data"
sample=$(mktemp /tmp/ets_sample.XXXXXX.csv)
trap 'rm -f "$sample" "$sample".*.llf' EXIT
"$build/bench_ets" "$data" "$sample" "$ns" "$th"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 -u "$here/ets_ref.py" "$data" "$sample" "$py"
