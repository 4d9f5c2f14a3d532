#!/bin/sh
# One command from a fresh clone to a running proxy (README "Quick start"):
#   1. makes the virtual environment ./.venv with python3 (PYTHON=... chooses
#      another; a Python already inside a virtual environment is used as is),
#      since a Debian/Ubuntu system Python refuses global pip installs (PEP 668);
#   2. pip installs this checkout into it (compiles the fast path: a minute or
#      two; skipped when nothing changed since the last install);
#   3. starts the demo downstream on 127.0.0.1:8081 and the INSTALLED command
#      `.venv/bin/rproxy -c rproxy.conf` on 127.0.0.1:8080, in the foreground.
# Then, in another terminal:  curl http://127.0.0.1:8080/
# Ctrl-C (or SIGTERM to this script) stops both.
set -eu
cd "$(dirname "$0")"
. ./scripts/venv.sh
use_venv "${PYTHON:-python3}"

if install_current; then
    echo "quickstart: rproxy in $VBIN is this checkout's, unchanged since it was installed"
else
    echo "quickstart: installing rproxy into $VBIN (compiles the fast path: a minute or two)"
    mark_installing
    "$VPY" -m pip install --quiet .
    mark_installed
fi

# the shipped rproxy.conf listens on 8080 and forwards to 8081
"$VPY" - <<'PYEOF'
import socket, sys
busy = []
for port in (8080, 8081):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            busy.append(port)
if busy:
    sys.exit(f"quickstart: 127.0.0.1:{' and '.join(map(str, busy))} already in use "
             "(rproxy.conf listens on 8080 and forwards to the demo on 8081): stop what listens there")
PYEOF

DEMO= RP=
stop() {
    trap - INT TERM EXIT
    for pid in $RP $DEMO; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'stop' EXIT
"$VPY" -P -m rproxy.demo_downstream --port 8081 &
DEMO=$!
"$VBIN/rproxy" -c rproxy.conf &
RP=$!
echo "quickstart: rproxy on http://127.0.0.1:8080/ (try: curl http://127.0.0.1:8080/), Ctrl-C stops it"
status=0
wait "$RP" || status=$?
exit "$status"
