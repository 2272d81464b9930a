#!/bin/sh
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang in build-fuzz and runs each
# for SECONDS seconds (default 20), starting from the seed corpora in tests/fuzz/corpus/.
#   tools/fuzz.sh [SECONDS] [TARGET...]      e.g. tools/fuzz.sh 3600 methods
# Crashing inputs found earlier (tests/fuzz/regressions/TARGET) are replayed first.
# New inputs are kept in build-fuzz/fuzz/TARGET/corpus, crashes in build-fuzz/fuzz/TARGET/artifacts.
# A crash fails the script; reproduce it with build-fuzz/fuzz_TARGET FILE.
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
[ $# -gt 0 ] && shift
TARGETS=${*:-"frame lua methods"}
DIR=${SX_FUZZ_BUILD:-build-fuzz}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
CC=clang cmake -S . -B "$DIR" -DSX_FUZZ=ON -DSX_FUZZ_SECONDS="$SECONDS_EACH" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in $TARGETS; do
	cmake --build "$DIR" --target fuzz_$t -j"${JOBS:-2}" >/dev/null
done
status=0
for t in $TARGETS; do
	work=$DIR/fuzz/$t
	mkdir -p "$work/corpus" "$work/artifacts"
	dict=""
	[ -f tests/fuzz/$t.dict ] && dict="-dict=tests/fuzz/$t.dict"
	regress=""
	[ -d tests/fuzz/regressions/$t ] && regress="tests/fuzz/regressions/$t"
	# SX_FUZZ_RUNS: a fixed number of runs from a fixed seed, so that a test suite
	# run explores the same inputs every time (CI must not turn red by chance).
	bound="-max_total_time=$SECONDS_EACH"
	[ -n "${SX_FUZZ_RUNS:-}" ] && bound="-runs=$SX_FUZZ_RUNS -seed=1 -max_total_time=600"
	echo "== fuzz_$t ($bound)"
	if ! ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp \
		"$DIR/fuzz_$t" $bound -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$work/artifacts/" $dict "$work/corpus" "tests/fuzz/corpus/$t" $regress \
		>"$work/log" 2>&1; then
		echo "fuzz_$t FAILED: see $work/log and $work/artifacts/" >&2
		grep -E "ERROR|SUMMARY|runtime error|fuzz_$t:" "$work/log" | head -5 >&2
		status=1
	else
		grep -E "^Done" "$work/log" || true
	fi
done
exit $status
