"""Lint, as part of the test command: ruff over rproxy/, tests/, benchmarks/,
setup.py and build/scripts/ (pyflakes, syntax errors, invalid escapes: [tool.ruff] in
pyproject.toml) and cython-lint over the Cython sources ([tool.cython-lint]).
Both are pinned in the `test` extras and run from the checkout these tests
belong to."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file() or not (ROOT / "rproxy").is_dir(),
                                reason=f"{ROOT} is not the source checkout")


def tool(name: str) -> str:
    """The linter installed next to this Python (the test extras), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    found = local if os.path.exists(local) else shutil.which(name)
    assert found, f"{name} is not installed: it is in the test extras (pip install '.[test]')"
    return found


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    r = run(tool("ruff"), "check", "--no-cache", "--output-format", "concise", "rproxy", "tests", "benchmarks",
            "setup.py", "build/scripts")
    assert r.returncode == 0, f"ruff check (fix these, or `ruff check --fix`):\n{r.stdout}{r.stderr}"


def test_cython_lint_finds_nothing():
    r = run(tool("cython-lint"), "rproxy")
    assert r.returncode == 0, f"cython-lint:\n{r.stdout}{r.stderr}"


def test_the_linters_would_see_a_fault(tmp_path):
    """The two commands above really lint: the same configuration reports an
    unused import in a Python file and an unused cimport in a .pyx."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\n")
    (tmp_path / "bad.pyx").write_text("from libc.stdlib cimport free\n")
    r = subprocess.run([tool("ruff"), "check", "--no-cache", "bad.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "F401" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([tool("cython-lint"), str(tmp_path / "bad.pyx")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "'free' imported but unused" in r.stdout, r.stdout + r.stderr
