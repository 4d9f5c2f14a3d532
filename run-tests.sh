#!/bin/sh
# The test command (CI runs exactly this): installs what the tests need from
# nothing (Debian packages, then the project with its test extras into a
# virtual environment), then runs the whole suite, lint included
# (tests/unit/test_lint.py: ruff and cython-lint).  Extra arguments go
# to pytest.  Then the sanitizer stage (tests/sanitize/run.sh: the end-to-end
# suite on an ASan + UBSan build, and a 60 s fuzz; README "Memory safety"),
# whatever the suite's result.  The exit status is the suite's, else the stage's.
#   PYTHON=/path/to/python3   the Python to use (default: python3 on PATH).  One
#                             that runs inside a virtual environment is installed
#                             into as it is; any other gets ./.venv made from it
#                             (a Debian system Python refuses global installs,
#                             PEP 668): see scripts/venv.sh.
#   RUN_TESTS_INSTALL_ONLY=1  stop after the install (tests/e2e/test_first_contact.py)
#   RPROXY_SKIP_SANITIZE=1    leave the sanitizer stage out (a quick local run;
#                             CI always runs it)
set -eu
cd "$(dirname "$0")"

need=""
for pkg in curl openssl nginx-light valgrind dpkg-dev debhelper dh-python python3-dev python3-venv python3-pip python3-lark python3-openssl python3-psutil python3-setproctitle adduser logrotate rpm rpmlint lintian prometheus tmux slowhttptest pkg-config zlib1g-dev libbrotli-dev libzstd-dev haproxy redis-server gcc binutils libasan8 libubsan1 pebble nodejs libnghttp2-dev nghttp2-client; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
# npm: Debian's package, unless a nodejs build that bundles it is installed
command -v npm >/dev/null 2>&1 || need="$need npm"
# installed without their Recommends: chromium's (upower, udev, avahi, polkit,
# printing and samba libraries, fonts-liberation: ~160 more packages) are a
# desktop's; the headless browser of the HTTP/2 tests runs without them
norec=""
for pkg in chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || norec="$norec $pkg"
done
if [ -n "$need$norec" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run-tests: missing Debian packages:$need$norec (run as root or install them)" >&2
        exit 1
    fi
    # Debian starts services on install when there is no systemd; the tests
    # start their own servers, so keep the packaged ones from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    [ -z "$need" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    [ -z "$norec" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $norec >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

. ./scripts/venv.sh
use_venv "${PYTHON:-python3}"
PY=$VPY
"$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
mark_installing
"$PY" -m pip install --quiet ".[test]"
mark_installed
# the public HTTP cache test suite (tests/e2e/test_http_cache_conformance.py):
# installed once from npm, pinned, then it runs offline
if [ ! -d .http-cache-tests/node_modules/http-cache-tests ]; then
    npm install --silent --no-audit --no-fund --prefix .http-cache-tests http-cache-tests@0.4.5 >/dev/null \
        || echo "run-tests: npm could not install http-cache-tests: its conformance test will be skipped" >&2
fi
if [ -n "${RUN_TESTS_INSTALL_ONLY:-}" ]; then
    echo "run-tests: rproxy and the test tools installed in $VBIN; RUN_TESTS_INSTALL_ONLY is set, so no tests run"
    exit 0
fi

# run from tests' parent but against the installed package, not the source
# tree; a failure (or pytest's 5, "no tests ran") is the exit status in the end
status=0
# every failure (suite and sanitizer stage) is listed once more at the very end
RPROXY_FAILED_LIST=$(mktemp)
export RPROXY_FAILED_LIST
list_failures() {
    if [ -s "$RPROXY_FAILED_LIST" ]; then
        echo "run-tests: failed:"
        sed 's/^/  /' "$RPROXY_FAILED_LIST"
    fi
    rm -f "$RPROXY_FAILED_LIST"
}
"$PY" -P -m pytest -q -p no:cacheprovider "$@" tests || status=$?
if [ "${RPROXY_SKIP_SANITIZE:-0}" = 1 ]; then
    echo "run-tests: sanitizer stage skipped (RPROXY_SKIP_SANITIZE=1)"
    list_failures
    exit "$status"
fi
# its own venv, made from the same Python; its pytest's 5 is a failure there too
PYTHON=$PY tests/sanitize/run.sh || {
    echo "run-tests: the sanitizer stage failed" >&2
    [ "$status" -ne 0 ] || status=1
}
list_failures
exit "$status"
