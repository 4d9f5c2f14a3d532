#!/bin/sh
# One command from a fresh checkout to a running proxy:
#   installs rproxy, starts the demo downstream on 127.0.0.1:8081 and runs
#   `rproxy -c rproxy.conf` (127.0.0.1:8080) in the foreground.
# Then, in another terminal:  curl http://127.0.0.1:8080/
# Ctrl-C stops both.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet .
"$PY" -m rproxy.demo_downstream --port 8081 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null' EXIT INT TERM
"$PY" -m rproxy -c rproxy.conf
