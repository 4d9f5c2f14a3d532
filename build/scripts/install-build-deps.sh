#!/bin/sh
# install-build-deps.sh PKG...: install the Debian packages among PKG that are
# missing (the Makefile's deps-* targets call it).  Installs only as root;
# otherwise it names what is missing and fails.
set -eu
missing=""
for p in "$@"; do
    # "install ok installed" only: a removed-but-not-purged package has a
    # status too and must still be installed
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-build-deps: missing Debian packages:$missing (run as root, or: apt-get install$missing)" >&2
    exit 1
fi
echo "install-build-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
    # a fresh machine has no package lists yet
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
