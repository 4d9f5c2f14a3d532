# The developer loop (README "Developer loop").  Every target uses one Python:
# PY (default: the quick start's ./.venv, else python3 on PATH), e.g.
#   make quick PY=~/venvs/rproxy/bin/python
# The tests run against the INSTALLED package (`make install`), never the
# source tree: install again after changing a .pyx/.pxi/.pxd.
#
#   make install    pip install ".[test]": what the tests use (1-3 min for the Cython core)
#   make build      in-place build: rproxy/_fastpath*.so next to the sources (compile check)
#   make annotate   cython -a report of the fast path: build/annotate/_fastpath.html
#   make unit       tests/unit (no sockets; lint and the seams check included)
#   make e2e        tests/e2e (real processes on 127.0.0.1)
#   make quick      a fast subset: seams, nogil, glue, lint, core proxying (about a minute)
#   make lint       ruff and cython-lint, as tests/unit/test_lint.py runs them
#   make test       ./run-tests.sh: the whole suite and the sanitizer stage, as CI runs it
#   make clean      the in-place build's files and build/annotate
# OS packages: build/Makefile (make -C build deb / rpm).

PY     ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BIN    := $(dir $(shell $(PY) -c 'import sys; print(sys.executable)'))
PYTEST := $(PY) -P -m pytest -q -p no:cacheprovider
# the build's own pins (pyproject.toml [build-system] requires): setuptools, wheel, Cython, llhttp
BUILD_PINS := $(shell sed -n 's/^requires = \[\(.*\)\]/\1/p' pyproject.toml | tr -d '",')
# the directives setup.py gives cythonize
CYTHON_DIRECTIVES := -X boundscheck=False -X wraparound=False -X cdivision=True \
                     -X initializedcheck=False -X embedsignature=False
QUICK := tests/unit/test_seams.py tests/unit/test_hot_path_is_nogil.py tests/unit/test_compiled_core.py \
         tests/unit/test_strict_glue.py tests/unit/test_request_glue.py tests/unit/test_lint.py \
         tests/unit/test_ports.py tests/e2e/test_proxying.py

.PHONY: install build annotate unit e2e quick lint test clean build-deps

install:
	$(PY) -m pip install -q ".[test]"

build-deps:
	$(PY) -m pip install -q $(BUILD_PINS)

build: build-deps
	$(PY) setup.py -q build_ext --inplace

annotate: build-deps
	mkdir -p build/annotate
	$(PY) -m cython -3 -a $(CYTHON_DIRECTIVES) rproxy/_fastpath.pyx -o build/annotate/_fastpath.c
	@echo "annotated: build/annotate/_fastpath.html and build/annotate/fastpath/<file>.html (yellow: Python)"

unit:
	$(PYTEST) tests/unit

e2e:
	$(PYTEST) tests/e2e

quick:
	$(PYTEST) $(QUICK)

lint:
	$(BIN)ruff check --no-cache --output-format concise rproxy tests benchmarks setup.py build/scripts
	$(BIN)cython-lint rproxy

test:
	./run-tests.sh

clean:
	rm -rf build/annotate rproxy/_fastpath.c rproxy/_fastpath.*.so rproxy/_fastpath.html
