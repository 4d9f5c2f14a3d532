"""The cache manager's sweep on a directory of fake entries."""
from __future__ import annotations

import os

from rproxy.cache_manager import TMP_GRACE, sweep

NOW = 1_700_000_000.0


def entry(d, name, size, used):
    p = d / name
    p.write_bytes(b"x" * size)
    os.utime(p, (used, used))
    return p


def test_inactive_entries_and_orphan_temp_files_go(tmp_path):
    old = entry(tmp_path, "00000000000000aa", 10, NOW - 700)
    fresh = entry(tmp_path, "00000000000000bb", 10, NOW - 5)
    orphan = entry(tmp_path, ".tmp.123.1", 10, NOW - TMP_GRACE - 1)
    storing = entry(tmp_path, ".tmp.123.2", 10, NOW - 5)
    removed, kept = sweep(str(tmp_path), 0, 600, wall=NOW)
    assert (removed, kept) == (2, 10)
    assert not old.exists() and not orphan.exists() and fresh.exists() and storing.exists()


def test_max_size_evicts_least_recently_used_first(tmp_path):
    a = entry(tmp_path, "a", 100, NOW - 30)
    b = entry(tmp_path, "b", 100, NOW - 20)
    c = entry(tmp_path, "c", 100, NOW - 10)
    removed, kept = sweep(str(tmp_path), 250, 600, wall=NOW)
    assert (removed, kept) == (1, 200)
    assert not a.exists() and b.exists() and c.exists()
    removed, kept = sweep(str(tmp_path), 0, 0, wall=NOW)        # 0: unlimited, no inactivity limit
    assert (removed, kept) == (0, 200)


def test_missing_directory_is_not_an_error(tmp_path):
    assert sweep(str(tmp_path / "none"), 1, 1, wall=NOW) == (0, 0)


def test_locks_of_dead_owners_go(tmp_path):
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()
    dead = tmp_path / ".lock.00000000000000aa"
    dead.write_text(f"{p.pid}\n")
    live = tmp_path / ".lock.00000000000000bb"
    live.write_text(f"{os.getpid()}\n")
    os.utime(dead, (NOW - 5, NOW - 5))
    os.utime(live, (NOW - 5, NOW - 5))
    removed, kept = sweep(str(tmp_path), 0, 600, wall=NOW)
    assert (removed, kept) == (1, 0)                    # locks are not entries: no size counted
    assert not dead.exists() and live.exists()
