"""Edge policy set-up: the rate limit zone and the per-rule tables.

The zone is one anonymous shared mapping (MAP_SHARED | MAP_ANONYMOUS) the
master creates before it forks workers (arbiter.spawn_worker calls
zone_for), so every worker updates the same GCRA states (rproxy/fastpath/
limits.pxi describes the table).  Layout, in 64-bit words:

  0..7        header: magic, slots, epoch (CLOCK_MONOTONIC us), catalog size
  8..         counters: LC_WORDS per limit name (catalog order)
  ...         slots: a power of two of words, one per key

A reload keeps the zone when `rate-limit-zone` did not change: states and
counters carry over, limits keep their catalog number by name (new names
get new numbers).  A new size gets a new zone; workers of the previous
generation keep the mapping they inherited until they exit.
"""
from __future__ import annotations

import mmap
import time
from typing import Optional

MAGIC = 0x5250524F58594C31          # "RPROXYL1"
HEADER_WORDS = 8
MAX_NAMES = 256


def slots_for(size: int) -> int:
    """Keys a zone of `size` bytes holds: size / 8, rounded down to a power of two."""
    n = max(1, size // 8)
    return 1 << (n.bit_length() - 1)


class LimitZone:
    def __init__(self, size: int):
        from .fastpath import edge_layout

        self.lc_words = edge_layout()["words"]
        self.size = size
        self.nslots = slots_for(size)
        self.counters_at = HEADER_WORDS
        self.slots_at = HEADER_WORDS + MAX_NAMES * self.lc_words
        nbytes = (self.slots_at + self.nslots) * 8
        nbytes = (nbytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self.mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.words = memoryview(self.mm).cast("Q")
        self.epoch_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.words[0] = MAGIC
        self.words[1] = self.nslots
        self.words[2] = self.epoch_us
        self.catalog: dict[str, int] = {}

    def fits(self, names) -> bool:
        return len(self.catalog) + len(set(names) - set(self.catalog)) <= MAX_NAMES

    def assign(self, names) -> None:
        for n in names:
            if n not in self.catalog:
                self.catalog[n] = len(self.catalog)
        self.words[3] = len(self.catalog)

    def counters(self, name: str) -> Optional[dict]:
        """admitted / limited / delayed / dry_run_limited / evictions of a limit."""
        from .fastpath import edge_layout

        i = self.catalog.get(name)
        if i is None:
            return None
        lay = edge_layout()
        at = self.counters_at + i * self.lc_words
        return {k: self.words[at + lay[k]] for k in ("admitted", "limited", "delayed", "dry_run_limited",
                                                      "evictions")}

    def used_slots(self) -> int:
        return sum(1 for w in self.words[self.slots_at:self.slots_at + self.nslots] if w)


_zone: Optional[LimitZone] = None


def zone_for(cfg) -> Optional[LimitZone]:
    """The zone `cfg`'s workers use (in the master, before forking them)."""
    global _zone
    if not cfg.rate_limits:
        return _zone
    names = [lim.name for lim in cfg.rate_limits]
    if _zone is None or _zone.size != cfg.rate_limit_zone or not _zone.fits(names):
        _zone = LimitZone(cfg.rate_limit_zone)
    _zone.assign(names)
    return _zone


def _access_entries(access) -> list:
    out = []
    for text, allowed in access:
        import ipaddress
        net = ipaddress.ip_network(text, strict=False)
        out.append((net.version, net.network_address.packed, net.prefixlen, allowed))
    return out


# GCRA in Redis: KEYS[1] the key, ARGV[1] T (us), ARGV[2] tolerance (us).
# Returns -(d + 1) when admitted (d: us to hold it in delay mode), else the
# us until it would conform.  Redis's own clock: nodes need not agree on time.
REDIS_SCRIPT = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local d = tat - now
if d > tol then return d - tol end
redis.call('SET', KEYS[1], string.format('%d', tat + T), 'PX', math.floor((tat + T - now) / 1000) + 1)
return -(d + 1)
"""


def configure_redis(cfg) -> None:
    import hashlib

    from .fastpath import _redis_attach
    from .worker import sockaddr_for

    r = cfg.redis
    family, raw, _ = sockaddr_for(_RedisAddr(r.addr, r.port))
    _redis_attach(family, raw, r.timeout, r.fail == "closed",
                  hashlib.sha1(REDIS_SCRIPT.encode()).hexdigest(), REDIS_SCRIPT)


class _RedisAddr:
    def __init__(self, addr, port):
        self.addr, self.port, self.name = addr, port, "redis"


def configure_worker(cfg) -> None:
    """In a worker: attach the zone inherited from the master, give each
    rule its access rules, deny status and limits, and each PROXY protocol
    listener its trusted sources."""
    from .fastpath import _edge_attach, _edge_set_rule, _pp_set_server

    for si, srv in enumerate(cfg.servers):
        if srv.proxy_protocol:
            _pp_set_server(si, [e[:3] for e in _access_entries((n, True) for n in srv.proxy_protocol_from)])

    index = {lim.name: i for i, lim in enumerate(cfg.rate_limits)}
    if cfg.rate_limits:
        z = zone_for(cfg)           # the master's, inherited through fork (or this process's own)
        limits = [{"name": lim.name, "id": z.catalog[lim.name], "rate": lim.rate, "burst": lim.burst,
                   "mode": lim.mode, "key": lim.key, "store": lim.store,
                   "counters_word": z.counters_at + z.catalog[lim.name] * z.lc_words}
                  for lim in cfg.rate_limits]
        _edge_attach(z.mm, z.slots_at, z.nslots, z.epoch_us, limits)
        if any(lim.store == "redis" for lim in cfg.rate_limits):
            configure_redis(cfg)
    for si, srv in enumerate(cfg.servers):
        for vi, vh in enumerate(srv.vhosts):
            access = _access_entries(vh.access)
            for ri, rule in enumerate(vh.rules):
                refs = [(index[n], (si << 40) | (vi << 20) | 0xFFFFF) for n in vh.rate_limit if n in index]
                refs += [(index[n], (si << 40) | (vi << 20) | ri) for n in rule.rate_limit
                         if n in index and n not in vh.rate_limit]
                _edge_set_rule(si, vi, ri, access, rule.deny_status if rule.deny else 0, refs)
