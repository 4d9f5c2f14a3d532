#!/bin/sh
# fetch-pydeps.sh DIR: download the pinned build requirements (pyproject's
# [build-system] requires) into DIR, so that the package builds themselves
# (dpkg-buildpackage, rpmbuild) run offline from the source tarball, as
# Debian's and Fedora's builders require.
#
# Why from PyPI at all: the fast path needs Cython 3 (Debian 12 has 0.29),
# and llhttp (the parser whose C API the fast path uses) is packaged by
# neither Debian nor Fedora.  Wheels are fetched as pure-Python ones
# (Cython has a py3-none-any wheel) for Python 3.11, requires-python's
# floor, so the same DIR serves any target Python >= 3.11; llhttp has only
# an sdist, which the package build compiles for the target Python.
set -eu
dir=$1
py=${PYTHON:-/usr/bin/python3}
here=$(dirname "$0")
mkdir -p "$dir"
for req in $("$py" "$here/pins.py" build-requires); do
    if "$py" -m pip download --quiet --disable-pip-version-check --dest "$dir" \
            --only-binary :all: --platform any --implementation py --python-version 3.11 "$req" 2>/dev/null; then
        continue
    fi
    # no pure-Python wheel (llhttp): take the sdist; it has no run-time deps
    "$py" -m pip download --quiet --disable-pip-version-check --dest "$dir" \
        --no-binary :all: --no-deps "$req"
done
ls "$dir"
