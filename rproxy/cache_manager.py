"""The cache manager (issue 21, first cut): run by the master between its
other duties, it keeps each cache directory within `max-size` and drops
entries unused for `inactive`.

A worker marks an entry used by setting its mtime when it serves a hit (one
futimens per hit; storing it sets it too), so "last used" is the file's
mtime.  A sweep lists the directory once (scandir, no file is opened),
removes what was unused for longer than `inactive`, temporary files left
by a worker that died while storing (older than an hour) and key locks
(`.lock.HASH`, holding the owner's pid: cache-lock and cache-use-stale
updating) whose owner is gone, then, when the rest is over `max-size`, the
least recently used entries until it fits.  (A worker that finds a lock of
a dead owner takes it over at once; the sweep only tidies up.)
Sweeps are spaced by at least ten times the last one's duration (and one
second), so a large cache costs the master a bounded share of its time.
The shared-memory index of the issue (`keys-zone`) is not built yet.
"""
from __future__ import annotations

import os
import time

from . import errorlog

TMP_GRACE = 3600.0          # a temp file older than this belongs to no live store


class CacheManager:
    def __init__(self):
        self.next_at = 0.0

    def tick(self, cfg, now: float) -> None:
        caches = getattr(cfg, "caches", ())
        if not caches or now < self.next_at:
            return
        t0 = time.monotonic()
        for c in caches:
            try:
                sweep(c.path, c.max_size, c.inactive)
            except OSError as e:
                errorlog.error(f"cache {c.name}: sweeping {c.path}: {e.strerror or e}")
        spent = time.monotonic() - t0
        self.next_at = now + max(1.0, 10 * spent)


def sweep(path: str, max_size: int, inactive: float, wall: float | None = None) -> tuple[int, int]:
    """One pass over a cache directory: (entries removed, bytes kept)."""
    wall = time.time() if wall is None else wall
    removed = 0
    kept = []
    total = 0
    try:
        it = os.scandir(path)
    except FileNotFoundError:
        return 0, 0
    with it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            age = wall - st.st_mtime
            if e.name.startswith(".tmp."):
                if age > TMP_GRACE:
                    removed += _unlink(e.path)
                continue
            if e.name.startswith(".lock."):
                if age > TMP_GRACE or not _owner_alive(e.path):
                    removed += _unlink(e.path)
                continue
            if inactive > 0 and age > inactive:
                removed += _unlink(e.path)
                continue
            kept.append((st.st_mtime, st.st_size, e.path))
            total += st.st_size
    if max_size and total > max_size:
        kept.sort()
        for _, size, p in kept:
            if total <= max_size:
                break
            removed += _unlink(p)
            total -= size
    return removed, total


def _owner_alive(p: str) -> bool:
    try:
        with open(p) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _unlink(p: str) -> int:
    try:
        os.unlink(p)
        return 1
    except FileNotFoundError:
        return 0
