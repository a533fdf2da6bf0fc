#!/bin/sh
# run.sh: the fuzz targets as part of the test suite, in TAP: for each target
# of tests/fuzz, one test that replays its seed corpus and every crash
# reproducer in tests/fuzz/regress/TARGET, then fuzzes it briefly
# (DNODED_FUZZ_SECONDS, default 10; 0 replays only). Built by scripts/fuzz
# with clang into FUZZ_BUILD (default ./fuzz: the build directory under make
# check). Skipped (exit 77) without a clang that can build libFuzzer targets.
# Logs: FUZZ_BUILD/check-TARGET.log.

top=${DNODED_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
secs=${DNODED_FUZZ_SECONDS:-10}
FUZZ_BUILD=${FUZZ_BUILD:-$(pwd)/fuzz}
export FUZZ_BUILD
fuzz="$top/scripts/fuzz"

skip() {
    echo "1..0 # SKIP $1"
    exit 77
}

command -v clang >/dev/null 2>&1 || skip "clang not found"
mkdir -p "$FUZZ_BUILD" || skip "cannot create $FUZZ_BUILD"
# clang without its libFuzzer runtime (libclang-rt-*-dev) is a skip, not a
# failure; sources that do not build are a failure.
probe="$FUZZ_BUILD/probe"
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; return (int)n * 0; }\n' \
    >"$probe.c"
clang -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >/dev/null 2>&1 ||
    skip "clang cannot link libFuzzer targets (libclang-rt-dev missing?)"
rm -f "$probe" "$probe.c"

targets=$("$fuzz" --list)
n=$(echo "$targets" | wc -l)
echo "1..$n"
if ! "$fuzz" --build >"$FUZZ_BUILD/check-build.log" 2>&1; then
    echo "Bail out! the fuzz targets do not build (see $FUZZ_BUILD/check-build.log)"
    exit 1
fi

i=0
failed=0
for t in $targets; do
    i=$((i + 1))
    log="$FUZZ_BUILD/check-$t.log"
    if ! "$fuzz" --regress "$t" >"$log" 2>&1; then
        echo "not ok $i - $t: a corpus or regress input crashes (see $FUZZ_BUILD/regress-$t.log)"
        failed=1
        continue
    fi
    if [ "$secs" -gt 0 ] && ! "$fuzz" "$t" "$secs" >>"$log" 2>&1; then
        echo "not ok $i - $t: crashed while fuzzing (see $log and $FUZZ_BUILD/crashes/$t/)"
        sed -n 's/^SUMMARY: /# /p' "$log"
        failed=1
        continue
    fi
    if [ "$secs" -gt 0 ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "ok $i - $t: corpus and reproducers replayed, then ${runs:-0} runs in ${secs} s"
    else
        echo "ok $i - $t: corpus and reproducers replayed"
    fi
done
exit $failed
