#!/bin/sh
# The test command (CI runs exactly this): installs what the tests need from
# nothing (Debian packages, the project with its test extras), then runs the
# whole suite.  Extra arguments go to pytest.  Then the sanitizer stage
# (tests/sanitize/run.sh: the end-to-end suite on an ASan + UBSan build, and a
# 60 s fuzz; README "Memory safety"), which RPROXY_SKIP_SANITIZE=1 skips for a
# quick local run (CI always runs it).  Fails if either fails.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

need=""
for pkg in curl openssl nginx-light dpkg-dev debhelper dh-python python3-dev python3-venv python3-pip python3-lark python3-openssl python3-psutil python3-setproctitle adduser logrotate rpm rpmlint lintian gcc binutils libasan8 libubsan1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run-tests: missing Debian packages:$need (run as root or install them)" >&2
        exit 1
    fi
    # Debian starts services on install when there is no systemd; the tests
    # start their own servers, so keep the packaged ones from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

"$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install --quiet ".[test]"
# run from tests' parent but against the installed package, not the source tree
rc=0
"$PY" -P -m pytest -q -p no:cacheprovider "$@" tests || rc=$?
if [ $rc -eq 5 ] && [ $# -gt 0 ]; then
    echo "run-tests: pytest selected no test with: $*"     # an explicit selection: not an error
    rc=0
fi
if [ "${RPROXY_SKIP_SANITIZE:-0}" = 1 ]; then
    echo "run-tests: sanitizer stage skipped (RPROXY_SKIP_SANITIZE=1)"
    exit $rc
fi
tests/sanitize/run.sh || { echo "run-tests: the sanitizer stage failed" >&2; rc=1; }
exit $rc
