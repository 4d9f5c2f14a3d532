"""The instruction-count regression guard (benchmarks/instructions.py): its
comparison, and the guard itself run in report mode against the baseline in
benchmarks/baseline/instructions.json (callgrind counts instructions, so
this does not depend on how loaded the machine is)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "instructions.py")


def _module():
    spec = importlib.util.spec_from_file_location("rproxy_bench_instructions", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_growth_beyond_the_tolerance_fails_and_within_it_or_shrinking_does_not():
    compare = _module().compare
    base = {"small": 10000, "tls": 20000}
    _, failures = compare(base, {"small": 11500, "tls": 20000})        # +15.0 %: at the limit
    assert failures == []
    _, failures = compare(base, {"small": 11501, "tls": 12000})        # just over; shrinking is fine
    assert len(failures) == 1 and failures[0].startswith("small:")
    lines, failures = compare(base, {"small": 10000, "new": 5})         # no baseline: reported only
    assert failures == [] and any("no baseline" in ln for ln in lines)


def test_the_scale_variable_makes_every_workload_fail():
    mod = _module()
    base = {"small": 10000}
    measured = {"small": round(10000 * 1.2)}           # what RPROXY_INSTR_SCALE=1.2 yields
    assert mod.compare(base, measured)[1]


def test_instruction_counts_stay_within_15_percent_of_the_baseline():
    if not shutil.which("valgrind"):
        pytest.fail("valgrind is missing (run-tests.sh installs it)")
    r = subprocess.run([sys.executable, "-P", BENCH], capture_output=True, text=True, timeout=300)
    sys.stdout.write(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no baseline" not in r.stdout, r.stdout
