#!/usr/bin/env bash
# Build rnncore with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy of this
# checkout (the checkout's own in-place build is left alone) and run the tests under it.
#
#   tests/fuzz/sanitize.sh                    # the whole test suite, fuzz tests at the ci profile
#   tests/fuzz/sanitize.sh tests/test_gemm.py # any pytest arguments instead
#
# Environment: RNNCORE_SANITIZE_DIR (default: a fresh /tmp/rnncore-asan.XXXXXX; reused as it is
# when it holds a build already, so a second run skips the build), RNNCORE_SANITIZE (default
# address,undefined), CXX (default g++; libasan is the one of that compiler).
#
# Python is not instrumented, so libasan is preloaded into it; leaks are not reported (the
# interpreter's own are noise); the first ASan or UBSan report stops the process. Every kernel
# is built as usual (the SIMD ones included: the run uses the best ISA of this CPU; the test
# suite's ISA tests run the others in child processes). The fuzz workers get no address-space
# limit under ASan (its shadow memory needs terabytes of it), so the inputs that would start
# thousands of threads are skipped there (see tests/fuzz/known.py).
# Exit status: pytest's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CXX=${CXX:-g++}
export RNNCORE_SANITIZE=${RNNCORE_SANITIZE:-address,undefined}
WORK=${RNNCORE_SANITIZE_DIR:-$(mktemp -d /tmp/rnncore-asan.XXXXXX)}
mkdir -p "$WORK"
start=$(date +%s)

if ! ls "$WORK"/rnncore/_core*.so >/dev/null 2>&1; then
    echo "sanitize.sh: copying $ROOT to $WORK"
    # the working tree as it is (tracked and untracked, not ignored), without build products
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
        while IFS= read -r -d '' f; do
            if [ -f "$ROOT/$f" ]; then mkdir -p "$WORK/$(dirname "$f")" && cp -p "$ROOT/$f" "$WORK/$f"; fi
        done
    echo "sanitize.sh: building with RNNCORE_SANITIZE=$RNNCORE_SANITIZE (log: $WORK/build.log)"
    if ! (cd "$WORK" && CXX=$CXX python3 setup.py build_ext --inplace -j2 >build.log 2>&1); then
        tail -30 "$WORK/build.log"
        echo "sanitize.sh: the build failed (log: $WORK/build.log)" >&2
        exit 2
    fi
fi
built=$(date +%s)

LIBASAN=$("$CXX" -print-file-name=libasan.so)
LIBSTDCXX=$("$CXX" -print-file-name=libstdc++.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize.sh: $CXX has no libasan.so ($LIBASAN)" >&2
    exit 2
fi
# libstdc++ too: python is not linked with it, and ASan's __cxa_throw interceptor must find the
# real one when it starts ("CHECK failed: ... real___cxa_throw" at the first C++ exception otherwise)
export LD_PRELOAD="$LIBASAN:$LIBSTDCXX${LD_PRELOAD:+:$LD_PRELOAD}"
# Reports go to files as well as stderr: pytest captures a test's stderr, and a process that a
# report stops takes its captured output with it.
REPORTS="$WORK/sanitizer-reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
# allocator_may_return_null + max_allocation_size_mb: a malloc past 4 GiB gives MemoryError, as the
# 4 GiB RLIMIT_AS of the fuzz workers does without ASan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=4096:detect_stack_use_after_return=0:log_path=$REPORTS/asan:log_exe_name=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan:log_exe_name=1}
export RNNCORE_FUZZ_PROFILE=${RNNCORE_FUZZ_PROFILE:-ci}
export RNNCORE_FUZZ_TIMEOUT=${RNNCORE_FUZZ_TIMEOUT:-60}

cd "$WORK"
echo "sanitize.sh: LD_PRELOAD=$LD_PRELOAD"
echo "sanitize.sh: ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS"
# (tee'd: UBSan's "runtime error" reports go to stderr whatever log_path says, so they are counted
# from the output too: a worker's reach it through the failure it causes, a subprocess's through
# its test's failure, pytest's own directly)
set +e
python3 -m pytest -q -p no:cacheprovider "${@:-tests}" 2>&1 | tee "$WORK/pytest.log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
# The fuzz tests provoke some reports on purpose: the harness's self-test (its worker leaves a
# marker, <log_path>-expected.<pid>, before it crashes) and the known failures (marked xfail).
# A report from anything else fails its test (a crashed fuzz worker) or the run (pytest itself
# stopped). Warnings (a huge malloc refused) are not reports.
reports=0
expected=0
for f in $(grep -l -E "ERROR: |runtime error:|CHECK failed" "$REPORTS"/* 2>/dev/null); do
    pid=${f##*.}
    if ls "$REPORTS"/*-expected."$pid" >/dev/null 2>&1; then
        expected=$((expected + 1))
        continue
    fi
    reports=$((reports + 1))
    echo "== $f"
    grep -m1 -E "ERROR: |runtime error:|CHECK failed" "$f" | cut -c1-200
    grep -m3 -E "^    #[0-9]+ .* (csrc|rnncore)/" "$f" | cut -c1-200 || true
done
# distinct UBSan reports (file:line:column: runtime error: ...) in the output
ubsan=$(grep -aoE "[^ ]+:[0-9]+:[0-9]+: runtime error: [^\\]*" "$WORK/pytest.log" | sort -u || true)
if [ -n "$ubsan" ]; then
    echo "$ubsan" | cut -c1-200
    reports=$((reports + $(echo "$ubsan" | wc -l)))
fi
if [ "$reports" -gt 0 ]; then
    echo "sanitize.sh: $reports sanitizer report(s) (listed above; in $REPORTS and $WORK/pytest.log; the xfail'ed" \
         "known failures' are expected)"
fi
echo "sanitize.sh: build $((built - start)) s, tests $((end - built)) s, exit status $status, $reports report(s)" \
     "(and $expected from the harness's self-test) ($WORK)"
exit $status
