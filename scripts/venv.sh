# Sourced (from the repository's root) by quickstart.sh and run-tests.sh:
# where rproxy gets installed.
#
# use_venv PY   PY is a Python 3.11+.  If it already runs inside a virtual
#               environment, use that one as it is.  Otherwise make ./.venv
#               from it, or reuse it when it was made from the same Python:
#               a Debian/Ubuntu system Python refuses `pip install` outside a
#               virtual environment (PEP 668, "externally-managed-environment"),
#               and a venv keeps the pinned dependencies away from the system's.
#               Sets VPY (that environment's python) and VBIN (its bin/, where
#               the `rproxy` command is installed).
# install_current
#               true when the environment holds an install of this checkout
#               whose sources have not changed since (same names and contents:
#               quickstart skips the minute-long compile then).
# mark_installing / mark_installed
#               around a `pip install` of this checkout into VPY.

use_venv() {
    _base=$1
    if ! "$_base" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
        echo "$0: '$_base' is not a Python 3.11 or newer (choose one with PYTHON=/path/to/python3)" >&2
        return 1
    fi
    if "$_base" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        VPY=$_base
    else
        _want=$("$_base" -c 'import sys; print(sys.base_prefix, sys.version)')
        if [ ! -x .venv/bin/python ] || [ ! -f .venv/pyvenv.cfg ] \
                || [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null)" != "$_want" ] \
                || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
            # missing, made by another Python, or left half-made (no pip)
            rm -rf .venv
            echo "$0: making the virtual environment ./.venv with $_base"
            if ! "$_base" -m venv .venv; then
                rm -rf .venv
                echo "$0: '$_base -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2
                return 1
            fi
        fi
        VPY=.venv/bin/python
    fi
    VBIN=$("$VPY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
    _stamp=$("$VPY" -c 'import sys; print(sys.prefix)')/.rproxy-install-digest
}

sources_digest() {
    # what `pip install .` builds from: names and contents, generated files left out
    _files=$(find rproxy setup.py pyproject.toml -name __pycache__ -prune -o -type f \
             ! -name '*.c' ! -name '*.so' ! -name '*.html' ! -name '*.pyc' -print | LC_ALL=C sort)
    { echo "$PWD"; echo "$_files"; echo "$_files" | xargs cat; } | cksum
}

install_current() {
    [ -f "$_stamp" ] && [ -x "$VBIN/rproxy" ] && [ "$(cat "$_stamp")" = "$(sources_digest)" ] &&
        # a regular install in the environment, not an editable one pointing here
        "$VPY" -P -c 'import sys, rproxy; sys.exit(not rproxy.__file__.startswith(sys.prefix + "/"))' 2>/dev/null
}

mark_installing() {
    rm -f "$_stamp"
    sources_digest > "$_stamp.new"    # the sources as the install starts
}

mark_installed() {
    mv -f "$_stamp.new" "$_stamp"
}
