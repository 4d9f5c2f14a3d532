"""The micro-benchmarks run (once each, timing disabled): CI proves they
still work without timing anything."""
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "test_micro.py")


def test_micro_benchmarks_run():
    r = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--benchmark-disable", BENCH], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout
