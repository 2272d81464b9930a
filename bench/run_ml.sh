#!/bin/sh
# Runs the ALS and logistic-regression benchmarks next to their Python peers,
# on the same data, in one go. Usage:
#   bench/run_ml.sh <build-dir> [als-iterations] [threads] [logreg-fits]
# Needs /usr/bin/python3 with numpy, scipy, scikit-learn; writes scratch files
# to ${TMPDIR:-/tmp}. Prints each program's RESULT line last.
# SX_BENCH_ONLY=logreg (or als) runs one half.
set -eu
B=${1:?build dir with bench_als and bench_logreg}
ITERS=${2:-10}
THREADS=${3:-2}
FITS=${4:-5}
ONLY=${SX_BENCH_ONLY:-}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${SX_DATA_DIR:-$HERE/../../shared/data}
T=${TMPDIR:-/tmp}/sx-bench-ml.$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT INT TERM
export OPENBLAS_NUM_THREADS=$THREADS

if [ "$ONLY" != logreg ]; then
	echo "== ALS, MovieLens small, $ITERS iterations, $THREADS threads"
	"$B/bench_als" movielens "$DATA/movielens_small_ratings.csv" "$T/ml.bin" "$ITERS" "$THREADS"
	/usr/bin/python3 "$HERE/als_ref.py" "$T/ml.bin" "$ITERS"

	echo "== ALS, synthetic 50k x 20k, $ITERS iterations, $THREADS threads"
	"$B/bench_als" synth "$T/synth.bin" "$ITERS" "$THREADS"
	/usr/bin/python3 "$HERE/als_ref.py" "$T/synth.bin" "$ITERS"
	rm -f "$T/synth.bin" "$T/ml.bin"
fi

if [ "$ONLY" != als ]; then
	# f32: X rounded to float (the benchmark data); f64: full doubles, where
	# the fit cannot use its float copy of X.
	for X in f32 f64; do
		echo "== logistic regression, 1M x 32, X $X, $THREADS threads, $FITS fits each"
		"$B/bench_logreg" "$T/lr.bin" "$THREADS" 1e-6 "$X" "$FITS"
		/usr/bin/python3 "$HERE/logreg_ref.py" "$T/lr.bin" "$FITS"
		rm -f "$T/lr.bin"
	done
fi
