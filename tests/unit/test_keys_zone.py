"""The keys zone (a cache's shared index, rproxy/fastpath/cache.pxi) and its
loader and eviction (rproxy/cache_manager.py), without a proxy."""
from __future__ import annotations

import mmap
import os
import struct

from rproxy.cache_manager import KeysZone, entry_expiry, evict, keys_for
from rproxy.fastpath import kz_del_key, kz_evict, kz_get, kz_init, kz_layout, kz_put_key, kz_stats, kz_touch_key

NOW_MS = 1_700_000_000_000


def zone(nslots):
    lay = kz_layout()
    mm = mmap.mmap(-1, lay["header"] + nslots * lay["slot"], flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    kz_init(mm, nslots)
    return mm


def test_layout_and_keys_per_size():
    lay = kz_layout()
    assert (lay["header"], lay["slot"], lay["probe"]) == (64, 32, 8)
    assert keys_for(64 * 1024) == 2046 and keys_for(10 * 1024 ** 2) == 327_678


def test_put_get_update_touch_delete():
    mm = zone(64)
    assert kz_get(mm, 5) is None
    assert kz_put_key(mm, 5, 100, NOW_MS, 1234) == 0
    assert kz_get(mm, 5) == (100, NOW_MS, 1234)
    assert kz_put_key(mm, 5, 200, NOW_MS + 1, 99) == 0           # a new version of the entry: updated
    assert kz_get(mm, 5) == (200, NOW_MS + 1, 99)
    assert kz_put_key(mm, 5, 300, NOW_MS + 2, 1, True) == 0      # the loader never replaces a stored key
    assert kz_get(mm, 5) == (200, NOW_MS + 1, 99)
    kz_touch_key(mm, 5, NOW_MS + 5)                             # within 20 ms: not written again
    assert kz_get(mm, 5)[1] == NOW_MS + 1
    kz_touch_key(mm, 5, NOW_MS + 500)
    assert kz_get(mm, 5)[1] == NOW_MS + 500
    assert kz_stats(mm) | {} == {"keys": 1, "bytes": 200, "slots": 64, "loaded": False, "skipped": 0,
                                 "full_evictions": 0}
    kz_del_key(mm, 5)
    assert kz_get(mm, 5) is None and kz_stats(mm)["keys"] == 0


def test_a_full_window_evicts_its_least_recently_used_key():
    mm = zone(16)
    keys = [16 * i for i in range(1, 9)]            # all start at slot 0: one window of 8
    for i, h in enumerate(keys):
        assert kz_put_key(mm, h, 10, NOW_MS + i, 0) == 0
    kz_touch_key(mm, keys[0], NOW_MS + 1000)        # the oldest is used again
    assert kz_put_key(mm, 16 * 9, 10, NOW_MS + 2000, 0) == keys[1]     # the least recently used goes
    assert kz_get(mm, keys[1]) is None and kz_get(mm, keys[0]) is not None and kz_get(mm, 16 * 9) is not None
    st = kz_stats(mm)
    assert (st["keys"], st["full_evictions"]) == (8, 1)
    # a deleted key leaves no hole that hides the keys after it (no tombstones needed)
    kz_del_key(mm, keys[0])
    assert all(kz_get(mm, h) is not None for h in keys[2:])


def test_windows_wrap_around_the_table_end():
    mm = zone(10)
    for h in (9, 19, 29):                           # start at the last slot, go on at 0
        kz_put_key(mm, h, 1, NOW_MS, 0)
    assert all(kz_get(mm, h) for h in (9, 19, 29))


def test_evict_inactive_then_least_recently_used_over_max_size():
    mm = zone(64)
    for i in range(1, 6):
        kz_put_key(mm, i, 100, NOW_MS - i * 1000, 0)            # key 5 is the least recently used
    gone, kept = kz_evict(mm, NOW_MS - 4500, 0)                 # inactive: last used before
    assert (sorted(gone), kept) == ([5], 400)
    gone, kept = kz_evict(mm, 0, 250)
    assert (sorted(gone), kept) == ([3, 4], 200)
    assert kz_evict(mm, 0, 0) == ([], 200)


def test_concurrent_stores_from_several_processes():
    mm = zone(16384)
    pids = []
    for w in range(4):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for i in range(2000):
                    h = (w << 32) | (i * 2654435761 % (1 << 31)) | 1
                    kz_put_key(mm, h, 1, NOW_MS, 0)
                    kz_put_key(mm, 7, 1, NOW_MS, 0)             # and one key they all store
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    for w in range(4):
        for i in range(2000):
            assert kz_get(mm, (w << 32) | (i * 2654435761 % (1 << 31)) | 1) is not None
    kz_del_key(mm, 7)                               # every copy a race may have made
    assert kz_get(mm, 7) is None and kz_stats(mm)["keys"] == 8000


HDR = struct.Struct("<8sIIIHHQqqqqqIIQq")


def entry_bytes(key: bytes, body: bytes, resp_time: int, lifetime: int, age0=0, kind=0) -> bytes:
    head = b"HTTP/1.1 200 OK\r\n"
    hdr_len = HDR.size + len(key) + len(head)
    return HDR.pack(b"RPXC0002", hdr_len, len(key), len(head), 200, kind, len(body), resp_time, resp_time,
                    -1, age0, lifetime, 0, 0, 0, -1) + key + head + body


def test_entry_expiry():
    raw = entry_bytes(b"http://a/x", b"b", 1000, 60, age0=10)
    assert entry_expiry(raw) == 1050
    assert entry_expiry(entry_bytes(b"k", b"", 1000, 60, kind=1)) == 0     # a Vary marker
    assert entry_expiry(b"junk") is None and entry_expiry(b"X" * 200) is None


def test_loader_fills_the_index_and_eviction_removes_files(tmp_path):
    names = {}
    for i in range(300):
        h = 0x1000 + i
        p = tmp_path / f"{h:016x}"
        p.write_bytes(entry_bytes(b"http://a/%03d" % i, b"x" * 50, 1000 + i, 60))
        t = 1_600_000_000 + i
        os.utime(p, (t, t))
        names[h] = p
    (tmp_path / ".tmp.1.1").write_bytes(b"partial")
    (tmp_path / ".lock.0000000000001000").write_text("1\n")
    (tmp_path / "00000000000000zz").write_bytes(b"not hex")
    (tmp_path / "0000000000000fff").write_bytes(b"not an entry")
    z = KeysZone("c", str(tmp_path), 64 * 1024)
    steps = 0
    while not z.load_step(0.0):                     # slices: one batch per call with no time budget
        steps += 1
    assert steps >= 1
    st = z.stats()
    assert st["loaded"] and st["keys"] == 300 and st["bytes"] == sum(p.stat().st_size for p in names.values())
    size, used, exp = kz_get(z.mm, 0x1005)
    assert used == (1_600_000_000 + 5) * 1000 and exp == 1005 + 60
    assert kz_get(z.mm, 0xFFF) is None
    one = names[0x1000].stat().st_size
    removed, kept = evict(z, 100 * one, 0)          # the 200 least recently used go, files too
    assert (removed, kept) == (200, 100 * one)
    assert not names[0x1000].exists() and names[0x1000 + 299].exists()
    removed, _ = evict(z, 0, 600, wall=1_600_000_000 + 249.5 + 600)     # unused for 10 minutes
    assert removed == 50 and len([n for n in os.listdir(tmp_path) if n.startswith("000")]) == 50 + 2


def test_zones_are_kept_across_reloads_of_the_same_size(tmp_path):
    from types import SimpleNamespace as NS

    from rproxy.cache_manager import zones_for

    def cfg(size):
        return NS(caches=[NS(name="c", path=str(tmp_path), keys_zone=size)])
    a = zones_for(cfg(65536))["c"]
    assert zones_for(cfg(65536))["c"] is a                  # a reload of the same size
    b = zones_for(cfg(131072))["c"]                          # another size: a new zone
    assert b is not a and b.nslots == keys_for(131072)
    assert zones_for(cfg(65536))["c"] is a                  # the previous generation's, while it lives
    assert zones_for(cfg(131072))["c"] is b
    zones_for(NS(caches=[]))
    zones_for(NS(caches=[]))
    assert zones_for(cfg(65536))["c"] is not a              # gone with both generations that used it
