#!/bin/sh
# The sanitizer stage (README "Memory safety"), run by run-tests.sh after the
# normal suite:
#   1. builds llhttp and rproxy's fast path with AddressSanitizer + UBSan into
#      a venv of their own (RPROXY_ASAN_VENV, default under /tmp, one per
#      checkout, outside the tree the packaging tests tar up), and checks
#      that both extension modules really are instrumented;
#   2. runs the end-to-end suite against that build, the sanitizer runtimes
#      preloaded into rproxy's own processes only (tests/support/proc.py
#      rproxy_command(): a preloaded libasan makes curl, ps... hang);
#   3. runs the fuzz harness (tests/fuzz/fuzz_proxy.py) for
#      RPROXY_FUZZ_SECONDS (default 60) with RPROXY_FUZZ_SEED (default 1);
#   4. fails if either failed or if any sanitizer report file was written,
#      printing the reports.
# Arguments go to the e2e pytest run (then exit code 5, "nothing selected",
# is not an error); RPROXY_FUZZ_SECONDS=0 skips the fuzz.
# `run.sh fuzz ARGS...` runs only the fuzz, with those arguments (e.g.
# --seconds 1800 --seed 7, or --seed 1 --case 42 -v to replay one case).
set -eu
MODE=all
if [ "${1:-}" = fuzz ]; then
    MODE=fuzz
    shift
fi
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${RPROXY_ASAN_VENV:-${TMPDIR:-/tmp}/rproxy-asan-venv-$(printf %s "$ROOT" | cksum | cut -d' ' -f1)}
REPORTS=${RPROXY_SANITIZER_REPORTS:-$VENV/reports}
FUZZ_SECONDS=${RPROXY_FUZZ_SECONDS:-60}
FUZZ_SEED=${RPROXY_FUZZ_SEED:-1}
SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g"
LLHTTP_VERSION=$(sed -n 's/^ *"llhttp==\([0-9.]*\)".*/\1/p' pyproject.toml | head -n 1)
[ -n "$LLHTTP_VERSION" ] || { echo "sanitize: no llhttp pin in pyproject.toml" >&2; exit 2; }

now() { date +%s; }
say() { echo "sanitize: $*"; }
t0=$(now)

# ---- 1. the sanitizer build ---------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
so_of() { "$VPY" -P -c "import importlib.util as u, sys; print(u.find_spec(sys.argv[1]).origin)" "$1"; }
instrumented() {   # FILE: has ASan and UBSan calls (undefined dynamic symbols from the runtimes)
    nm -D --undefined-only "$1" | grep -q ' __asan_report_load' &&
        nm -D --undefined-only "$1" | grep -q ' __ubsan_handle_'
}
# llhttp from its sdist with the same flags (the fast path calls into it, and
# pip's wheel is not instrumented); no cache, so no uninstrumented wheel is reused
if ! { ll=$(so_of __llhttp 2>/dev/null) && instrumented "$ll"; }; then
    say "building llhttp==$LLHTTP_VERSION with sanitizers"
    CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" \
        "$VPY" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps \
        --no-binary llhttp "llhttp==$LLHTTP_VERSION"
fi
# the build requirements (pyproject's pins) live in this venv, so each run
# builds without making an isolated build environment (half a minute on a
# busy machine); llhttp's header comes from the instrumented llhttp above
BUILD_REQS=$("$VPY" -P -c "import tomllib; print(' '.join(r for r in tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'] if not r.startswith('llhttp')))")
"$VPY" -m pip install --quiet $BUILD_REQS
say "building rproxy with RPROXY_SANITIZE=1"
RPROXY_SANITIZE=1 "$VPY" -m pip install --quiet --no-cache-dir --no-build-isolation ".[test]"
for mod in __llhttp rproxy._fastpath; do
    so=$(so_of "$mod")
    if ! instrumented "$so"; then
        echo "sanitize: $so ($mod) is not instrumented (no __asan_report_*/__ubsan_handle_* calls)" >&2
        exit 2
    fi
done
t1=$(now)
say "build: $((t1 - t0)) s"

# ---- the runtime, for rproxy's processes only ---------------------------------------
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    [ -e "$lib" ] || { echo "sanitize: gcc does not know $lib" >&2; exit 2; }
done
case "$ROOT$REPORTS" in *[[:space:]]*)
    echo "sanitize: paths with spaces are not supported ($ROOT, $REPORTS)" >&2; exit 2;;
esac
# UBSan's report path.  In a process with both runtimes, libubsan sets its
# report path by calling __sanitizer_set_report_path, which libasan (first in
# LD_PRELOAD) interposes: UBSAN_OPTIONS' log_path lands on ASan's reports and
# UBSan's own stay on stderr.  So UBSAN_OPTIONS names ASan's path (harmless),
# and a .pth file of this venv sets libubsan's own path from
# RPROXY_UBSAN_LOG_PATH when libubsan is preloaded (rproxy's processes only).
SITE=$("$VPY" -P -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$SITE/rproxy_sanitize_ubsan.pth" <<'PTH'
import os; _p = os.environ.get("RPROXY_UBSAN_LOG_PATH"); _l = [x for x in os.environ.get("LD_PRELOAD", "").split(":") if "libubsan" in x]; _p and _l and __import__("ctypes").CDLL(_l[0]).__sanitizer_set_report_path(_p.encode()); del _p, _l
PTH
# detect_leaks=0: CPython's own allocations are not leaks we can act on.
# log_path: one file per process (asan.PID / ubsan.PID); any file fails the stage.
# ASan stops a process at its first error (the worker dies, the master logs it);
# UBSan reports and goes on (each kind once per place), so one run shows them all.
san_env() {     # REPORT_DIR -> NAME=VALUE words for rproxy's processes
    echo "LD_PRELOAD=$ASAN_LIB:$UBSAN_LIB" \
        "ASAN_OPTIONS=detect_leaks=0:log_path=$1/asan:suppressions=$ROOT/tests/sanitize/asan.supp:strict_memcmp=1" \
        "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path=$1/asan" \
        "RPROXY_UBSAN_LOG_PATH=$1/ubsan"
}

# A canary, through the same environment: the instrumented modules import,
# and both runtimes write their report files (a stage that cannot report
# would always be green).
canary=$(mktemp -d)
printf 'int rp_canary_ub(int x) { return x + 2147483647; }\n' > "$canary/ub.c"
gcc -shared -fPIC $SAN_FLAGS "$canary/ub.c" -o "$canary/ub.so"
env $(san_env "$canary") "$VPY" -P -c "import rproxy.fastpath" || {
    echo "sanitize: the instrumented fast path does not import with the runtime preloaded" >&2
    exit 2
}
env $(san_env "$canary") "$VPY" -P -c "
import ctypes
ctypes.CDLL('$canary/ub.so').rp_canary_ub(5)   # signed overflow: UBSan
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
src = libc.malloc(8)
dst = ctypes.create_string_buffer(64)
ctypes.memmove(dst, src, 16)    # reads 8 bytes past an 8-byte block: ASan
" >/dev/null 2>&1 || true
if ! grep -qs "heap-buffer-overflow" "$canary"/asan.* || ! grep -qs "runtime error: signed integer overflow" "$canary"/ubsan.*; then
    echo "sanitize: the runtimes did not write the canary's reports in $canary" >&2
    ls -l "$canary" >&2
    exit 2
fi
rm -rf "$canary"

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
chmod 1777 "$REPORTS"       # a test may drop rproxy's privileges to nobody
RPROXY_TEST_SANITIZER_ENV=$(san_env "$REPORTS")
RPROXY_SANITIZER_REPORTS=$REPORTS
export RPROXY_TEST_SANITIZER_ENV RPROXY_SANITIZER_REPORTS

# ---- 2. the end-to-end suite ----------------------------------------------------------
# Left out:
#  - test_packaging.py: builds .deb/.rpm packages from the source, not the
#    sanitizer build (and minutes of dpkg-buildpackage);
#  - test_first_contact.py: clones the tree and installs it afresh (the
#    normal build, minutes of compiling) to run the README's commands;
#  - test_backpressure.py::test_slow_client_and_slow_downstream_keep_memory_bounded:
#    asserts on worker RSS, which ASan's shadow memory and quarantine make
#    meaningless;
#  - test_pools.py::test_downstream_closing_idle_connections_never_shows_a_502:
#    ~9 s of idle-timeout cycles under ASan (the stage has a time budget);
#    the pool's close/reconnect paths run in test_pool_lifecycle.py too;
#  - test_slow_clients.py: the slow-headers attack ([H]) and the starvation
#    control without buffering: ~11 s each of slowhttptest under ASan; the
#    slow-body ([B]) and slow-read ([X]) runs, which go through request and
#    response buffering, stay.
status=0
e2e=0
if [ $MODE = fuzz ]; then
    say "e2e left out (run.sh fuzz)"
elif [ $# -gt 0 ]; then
    "$VPY" -P -m pytest -q -p no:cacheprovider "$@" || e2e=$?
    [ $e2e -eq 5 ] && { say "pytest selected no test"; e2e=0; }
else
    "$VPY" -P -m pytest -q -p no:cacheprovider --durations=10 tests/e2e \
        --ignore=tests/e2e/test_packaging.py --ignore=tests/e2e/test_first_contact.py \
        --ignore=tests/e2e/test_http_cache_conformance.py \
        --deselect=tests/e2e/test_backpressure.py::test_slow_client_and_slow_downstream_keep_memory_bounded \
        --deselect=tests/e2e/test_pools.py::test_downstream_closing_idle_connections_never_shows_a_502 \
        --deselect="tests/e2e/test_slow_clients.py::test_normal_requests_keep_being_answered_under_slowhttptest[H]" \
        --deselect=tests/e2e/test_slow_clients.py::test_without_buffering_and_growth_slow_bodies_starve_the_probe \
        || e2e=$?
    [ $e2e -eq 5 ] && say "pytest collected no test"     # a failure: the stage must test something
fi
t2=$(now)
say "e2e under sanitizers: exit $e2e, $((t2 - t1)) s"
[ $e2e -eq 0 ] || status=1

# ---- 3. the fuzz ---------------------------------------------------------------------
fuzz=0
if [ $MODE = fuzz ]; then
    "$VPY" -P tests/fuzz/fuzz_proxy.py --reports "$REPORTS" "$@" || fuzz=$?
    say "fuzz $*: exit $fuzz, $(($(now) - t2)) s"
    [ $fuzz -eq 0 ] || status=1
elif [ "$FUZZ_SECONDS" != 0 ]; then
    "$VPY" -P tests/fuzz/fuzz_proxy.py --seconds "$FUZZ_SECONDS" --seed "$FUZZ_SEED" \
        --reports "$REPORTS" || fuzz=$?
    say "fuzz ($FUZZ_SECONDS s, seed $FUZZ_SEED): exit $fuzz, $(($(now) - t2)) s"
    [ $fuzz -eq 0 ] || status=1
fi

# ---- 4. any report fails the stage -------------------------------------------------------
found=$(find "$REPORTS" -type f | sort)
if [ -n "$found" ]; then
    echo "sanitize: sanitizer reports written:" >&2
    for f in $found; do
        echo "==== $f" >&2
        cat "$f" >&2
    done
    status=1
fi
say "total $(($(now) - t0)) s: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
