#!/bin/sh
# The whole test suite: C unit tests (cmocka), Lua specs (busted), end-to-end tests over
# TCP, in a normal build and in an AddressSanitizer + UndefinedBehaviorSanitizer build.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
JOBS=$(nproc)
for variant in release asan; do
	dir=build-test-$variant
	flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo"
	[ $variant = asan ] && flags="$flags -DSX_SANITIZE=ON"
	echo "== $variant build"
	cmake -S . -B $dir $flags >/dev/null
	cmake --build $dir -j"$JOBS" >/dev/null
	echo "== $variant tests"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $dir --output-on-failure -j"$JOBS"
done
# A short, deterministic fuzzing run: a fixed number of inputs from a fixed seed per target,
# after the seed corpora and the regressions (longer, open-ended runs: tools/fuzz.sh 3600).
echo "== fuzz (${SX_FUZZ_RUNS:=30000} runs per target)"
SX_FUZZ_RUNS=$SX_FUZZ_RUNS sh tools/fuzz.sh
