"""The cache manager (issue 21): run by the master between its other
duties, it keeps each cache within `max-size`, drops entries unused for
`inactive`, and fills each cache's keys zone at start.

Keys zone (`keys-zone`): one anonymous shared mapping per cache that the
master maps before it forks workers (`zones_for`, from arbiter.spawn_worker),
so the workers and the master share one index of the entries: per key its
hash, size, last use and expiry (rproxy/fastpath/cache.pxi describes the
table; 32 bytes a key).  Workers update it with atomic operations as they
store (insert), hit (last use) and invalidate (clear); a lookup of a key the
index does not know is a miss without opening a file -- once the loader is
done: until then a worker asks the file system.

The loader fills a new zone from the entry files (file name = the key's
hash, size and mtime from one scandir, expiry from the entry's header): in
slices of LOAD_SLICE seconds between the master's other duties (the master
loop does not sleep while a loader is pending), never blocking the workers.
A reload keeps a cache's zone when its path and size did not change (the
index carries over, no loader); a new size, or a restart, builds a new one.

Eviction, once the index is loaded, reads only the index: entries last used
more than `inactive` ago, then the least recently used until the rest is
within `max-size`, are cleared from it and their files removed.  Temporary
files left by a worker that died while storing (older than an hour) and key
locks (`.lock.HASH`, holding the owner's pid) whose owner is gone are
tidied by a directory walk every TIDY_EVERY seconds (a worker that finds a
lock of a dead owner takes it over at once; the walk only tidies up).
Passes are spaced by at least ten times the last one's duration (and one
second), so a large cache costs the master a bounded share of its time.
"""
from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Optional

from . import errorlog

TMP_GRACE = 3600.0          # a temp file older than this belongs to no live store
TIDY_EVERY = 60.0           # seconds between walks for temp files and dead locks (with an index)
LOAD_SLICE = 0.05           # seconds of loading per master loop turn
KZ_HEADER = 64              # bytes: KzHdr, rproxy/fastpath/cache.pxi
KZ_SLOT = 32                # bytes: KzEnt
# CacheHdr (cache.pxi): magic, hdr_len, key_len, head_len, status, kind, body_len, req_time,
# resp_time, date, age0, lifetime, eflags, pad, gen, stale_if_error
_HDR = struct.Struct("<8sIIIHHQqqqqqIIQq")
_MAGIC = b"RPXC0002"


def keys_for(size: int) -> int:
    """Keys a zone of `size` bytes holds: (size - 64) / 32."""
    return max(1, (size - KZ_HEADER) // KZ_SLOT)


def entry_expiry(raw: bytes) -> Optional[int]:
    """When the entry whose first bytes are `raw` stops being fresh (unix
    s; 0 for a Vary marker), None when it is not an entry."""
    if len(raw) < _HDR.size:
        return None
    (magic, _hl, _kl, _hd, _st, kind, _bl, req_time, resp_time, date, age0, lifetime, _ef, _pad, _gen,
     _sie) = _HDR.unpack_from(raw)
    if magic != _MAGIC:
        return None
    if kind != 0:
        return 0
    apparent = resp_time - date if date >= 0 and resp_time > date else 0
    corrected = age0 + max(0, resp_time - req_time)
    return resp_time + lifetime - max(apparent, corrected)


class KeysZone:
    """One cache's shared index and its loader."""

    def __init__(self, name: str, path: str, size: int):
        from .fastpath import kz_init

        self.name, self.path, self.size = name, path, size
        self.nslots = keys_for(size)
        nbytes = KZ_HEADER + self.nslots * KZ_SLOT
        nbytes = (nbytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self.mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        kz_init(self.mm, self.nslots)
        self.loaded = False
        self._scan = None
        self.loaded_keys = 0

    def load_step(self, budget: float) -> bool:
        """Load entries for up to `budget` seconds; True once done."""
        from .fastpath import kz_put_key, kz_set_loaded

        if self.loaded:
            return True
        t_end = time.monotonic() + budget
        if self._scan is None:
            try:
                self._scan = os.scandir(self.path)
            except FileNotFoundError:
                self._scan = iter(())
            except OSError as e:
                errorlog.error(f"cache {self.name}: loading {self.path}: {e.strerror or e}")
                self._scan = iter(())
        n = 0
        for e in self._scan:
            name = e.name
            if len(name) == 16 and name[0] != ".":
                try:
                    h = int(name, 16)
                    st = e.stat(follow_symlinks=False)
                    fd = os.open(e.path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        exp = entry_expiry(os.pread(fd, _HDR.size, 0))
                    finally:
                        os.close(fd)
                except (ValueError, OSError):
                    exp = None
                if exp is not None and h:
                    victim = kz_put_key(self.mm, h, st.st_size, st.st_mtime_ns // 1000000, exp, True)
                    self.loaded_keys += 1
                    if victim and victim != h:
                        _unlink(os.path.join(self.path, f"{victim:016x}"))
            n += 1
            if n % 64 == 0 and time.monotonic() >= t_end:
                return False
        close = getattr(self._scan, "close", None)
        if close is not None:
            close()
        self._scan = None
        self.loaded = True
        kz_set_loaded(self.mm, True)
        errorlog.notice(f"cache {self.name}: index loaded, {self.loaded_keys} entries")
        return True

    def stats(self) -> dict:
        from .fastpath import kz_stats

        return kz_stats(self.mm)


# zones by (cache name, path, size): those of the last two configurations a
# worker was forked for (a reload's new generation and the one it replaces,
# whose workers may still be respawned while the new one starts)
_zones: dict = {}
_latest: frozenset = frozenset()
_previous: frozenset = frozenset()


def _key(c) -> tuple:
    return (c.name, c.path, c.keys_zone)


def zones_for(cfg) -> dict:
    """The keys zones of `cfg`'s caches by cache name (in the master, before
    forking the workers that use them): kept when a cache's path and size
    are the same."""
    global _latest, _previous, _zones
    keys = frozenset(_key(c) for c in getattr(cfg, "caches", ()))
    if keys != _latest:
        _previous, _latest = _latest, keys
        _zones = {k: z for k, z in _zones.items() if k in _latest or k in _previous}
    out = {}
    for c in getattr(cfg, "caches", ()):
        z = _zones.get(_key(c))
        if z is None:
            z = _zones[_key(c)] = KeysZone(c.name, c.path, c.keys_zone)
        out[c.name] = z
    return out


def zone_of(c) -> Optional[KeysZone]:
    """The zone of cache block `c`, if one was mapped."""
    return _zones.get(_key(c))


def index_stats(cfg) -> list:
    """Per cache of `cfg`: name and its index's counts (/metrics)."""
    out = []
    for c in getattr(cfg, "caches", ()):
        z = zone_of(c)
        if z is not None:
            out.append({"name": c.name, **z.stats()})
    return out


class CacheManager:
    def __init__(self):
        self.next_at = 0.0
        self.tidy_at = 0.0

    def loading(self) -> bool:
        return any(not z.loaded for z in _zones.values())

    def next_deadline(self, now: float) -> Optional[float]:
        """The master loop's next wake-up for the loaders (now while one is pending)."""
        return now if self.loading() else None

    def tick(self, cfg, now: float) -> None:
        caches = getattr(cfg, "caches", ())
        for z in list(_zones.values()):
            if not z.loaded:
                z.load_step(LOAD_SLICE)
        if not caches or now < self.next_at:
            return
        t0 = time.monotonic()
        tidy = now >= self.tidy_at
        for c in caches:
            z = zone_of(c)
            try:
                if z is None:
                    sweep(c.path, c.max_size, c.inactive)
                    continue
                if z.loaded:
                    evict(z, c.max_size, c.inactive)
                if tidy:
                    sweep(c.path, 0, 0, entries=False)
            except OSError as e:
                errorlog.error(f"cache {c.name}: sweeping {c.path}: {e.strerror or e}")
        if tidy:
            self.tidy_at = now + TIDY_EVERY
        spent = time.monotonic() - t0
        self.next_at = now + max(1.0, 10 * spent)


def evict(z: KeysZone, max_size: int, inactive: float, wall: Optional[float] = None) -> tuple[int, int]:
    """One pass over a cache's index: (entries removed, bytes kept)."""
    from .fastpath import kz_evict

    wall = time.time() if wall is None else wall
    victims, kept = kz_evict(z.mm, int((wall - inactive) * 1000) if inactive > 0 else 0, max_size)
    for h in victims:
        _unlink(os.path.join(z.path, f"{h:016x}"))
    return len(victims), kept


def sweep(path: str, max_size: int, inactive: float, wall: float | None = None,
          entries: bool = True) -> tuple[int, int]:
    """One pass over a cache directory: (entries removed, bytes kept);
    entries=False: temp files and locks only (the index has the entries)."""
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
            if not entries:
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
