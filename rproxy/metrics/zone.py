"""The metrics zone: shared memory the workers count into, the master reads.

One zone is an anonymous shared mapping (MAP_SHARED | MAP_ANONYMOUS) the
master creates before it forks the workers that use it.  It holds:

  header      a few words (magic, layout version)
  retired     counters of workers that have exited (folded in by the master)
  slots       one per live worker: its own gauges, counters and gauges
              records, each slot a whole number of cache lines

Records are arrays of uint64 words (layouts: rproxy/fastpath/metrics.pxi,
read through fastpath.metrics_layout()), one per label set in the zone's
catalog: servers (listener label), rules (server, vhost, rule; one record
per server with empty vhost and rule for requests no rule took) and
downstreams (server, downstream).  A worker only ever writes its own slot.

Monotonic totals: when a worker exits, the master adds its slot's counters
to `retired` and zeroes the slot (gauges are dropped) before the slot is
used again, so what the master reads (retired + live slots) never goes
down.  The master is the only reader and the only folder, in one thread:
no read can see a slot both folded and not yet cleared.

Reloads: the catalog only grows.  A new configuration whose labels fit in
the zone's spare capacity (it is sized at twice the first configuration,
at least 16 records per kind) keeps the zone: labels already known keep
their records, new ones get free records.  One that does not fit gets a new
zone; the old one lives until its last worker (of the draining generation)
has exited, then its totals are folded, by label, into the new zone's
retired area -- totals of labels the new configuration no longer has are
dropped with it, as their series stop being exported anyway.
"""
from __future__ import annotations

import mmap
from typing import Optional

MAGIC = 0x5250524F58594D31          # "RPROXYM1"
HEADER_WORDS = 8
LINE_WORDS = 8                      # 64-byte cache lines: no two slots share one

KINDS = ("server", "rule", "ds")
_REC = {"server": ("server_counters", "server_gauges"), "rule": ("rule_counters", "rule_gauges"),
        "ds": ("ds_counters", "ds_gauges")}

_layout: Optional[dict] = None


def layout() -> dict:
    global _layout
    if _layout is None:
        from ..fastpath import metrics_layout

        _layout = metrics_layout()
    return _layout


def _round(n: int) -> int:
    return (n + LINE_WORDS - 1) // LINE_WORDS * LINE_WORDS


def labels_of(cfg) -> dict:
    """The label sets of a configuration, in the order worker.build numbers
    them: {"server": [...], "rule": [...], "ds": [...]}."""
    servers, rules, dss = [], [], []
    for srv in cfg.servers:
        servers.append((srv.label,))
        rules.append((srv.label, "", ""))           # requests no rule took
        for vh in srv.vhosts:
            for rule in vh.rules:
                rules.append((srv.label, vh.name, rule.name))
        for ds in srv.downstreams:
            dss.append((srv.label, ds.name))
    return {"server": servers, "rule": rules, "ds": list(dict.fromkeys(dss))}


class Zone:
    def __init__(self, labels: dict, nslots: int):
        lay = layout()
        self.caps = {k: max(16, 2 * len(set(labels[k]))) for k in KINDS}
        self.cwords = {k: lay[_REC[k][0]]["words"] for k in KINDS}
        self.gwords = {k: lay[_REC[k][1]]["words"] for k in KINDS}
        self.wg_words = _round(lay["worker_gauges"]["words"])
        # offsets inside the counters area and inside the gauges area
        self.coff, self.goff = {}, {}
        c = g = 0
        for k in KINDS:
            self.coff[k] = c
            c += self.caps[k] * self.cwords[k]
            self.goff[k] = g
            g += self.caps[k] * self.gwords[k]
        self.counter_words = _round(c)
        self.gauge_words = _round(g)
        self.slot_words = self.wg_words + self.counter_words + self.gauge_words
        self.retired_at = HEADER_WORDS
        self.slots_at = self.retired_at + self.counter_words
        self.nslots = nslots
        size = (self.slots_at + nslots * self.slot_words) * 8
        self.size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self.mm = mmap.mmap(-1, self.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.words = memoryview(self.mm).cast("Q")
        self.words[0] = MAGIC
        self.words[1] = 1
        self.catalog: dict = {k: {} for k in KINDS}
        self.free = list(range(nslots))
        self.used: set = set()
        self.assign(labels)

    # ---- catalog ------------------------------------------------------------

    def fits(self, labels: dict) -> bool:
        return all(len(self.catalog[k]) + len(set(labels[k]) - set(self.catalog[k])) <= self.caps[k]
                   for k in KINDS)

    def assign(self, labels: dict) -> None:
        for k in KINDS:
            cat = self.catalog[k]
            for lab in labels[k]:
                if lab not in cat:
                    cat[lab] = len(cat)

    # ---- slots --------------------------------------------------------------

    def slot_base(self, slot: int) -> int:
        return self.slots_at + slot * self.slot_words

    def alloc(self) -> Optional[int]:
        if not self.free:
            return None
        slot = self.free.pop(0)
        self.used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        """A worker that had `slot` exited: fold its counters into the
        retired totals, clear the slot, make it available again."""
        base = self.slot_base(slot)
        cbase = base + self.wg_words
        w = self.words
        ra = self.retired_at
        vals = w[cbase:cbase + self.counter_words].tolist()
        for i, v in enumerate(vals):
            if v:
                w[ra + i] = (w[ra + i] + v) & 0xFFFFFFFFFFFFFFFF
        self.mm[base * 8:(base + self.slot_words) * 8] = bytes(self.slot_words * 8)
        self.used.discard(slot)
        self.free.append(slot)

    def worker_args(self, cfg, slot: int, pid_hint: int = 0) -> dict:
        """What Worker.set_metrics takes for a worker of `cfg` in `slot`."""
        labels = labels_of(cfg)
        base = self.slot_base(slot)
        cbase = base + self.wg_words
        gbase = cbase + self.counter_words

        def rec(kind, lab):
            i = self.catalog[kind][lab]
            return (cbase + self.coff[kind] + i * self.cwords[kind],
                    gbase + self.goff[kind] + i * self.gwords[kind])

        servers, unrouted, rules, dss = [], [], {}, []
        for si, srv in enumerate(cfg.servers):
            servers.append(rec("server", (srv.label,)))
            unrouted.append(rec("rule", (srv.label, "", ""))[0])
            for vi, vh in enumerate(srv.vhosts):
                for ri, rule in enumerate(vh.rules):
                    rules[(si, vi, ri)] = rec("rule", (srv.label, vh.name, rule.name))
            for ds in srv.downstreams:
                dss.append(rec("ds", (srv.label, ds.name)))
        assert len(servers) == len(labels["server"])
        return {"worker_word": base, "servers": servers, "rules": rules, "unrouted": unrouted,
                "downstreams": dss}

    # ---- reading ------------------------------------------------------------

    def counters(self) -> list:
        """Retired + every live slot, word by word."""
        w = self.words
        total = w[self.retired_at:self.retired_at + self.counter_words].tolist()
        for slot in sorted(self.used):
            cbase = self.slot_base(slot) + self.wg_words
            vals = w[cbase:cbase + self.counter_words].tolist()
            total = [a + b for a, b in zip(total, vals)]
        return total

    def slot_requests(self, slot: int) -> int:
        """Requests the worker in `slot` has finished (every rule's classes)."""
        lay = layout()["rule_counters"]
        at = self.slot_base(slot) + self.wg_words + self.coff["rule"]
        n = self.cwords["rule"]
        w = self.words
        return sum(sum(w[at + i * n + lay["class"]:at + i * n + lay["class"] + 6])
                   for i in range(len(self.catalog["rule"])))

    def slot_gauges(self, slot: int) -> list:
        gbase = self.slot_base(slot) + self.wg_words + self.counter_words
        return self.words[gbase:gbase + self.gauge_words].tolist()

    def worker_gauges(self, slot: int) -> list:
        base = self.slot_base(slot)
        return self.words[base:base + self.wg_words].tolist()

    def record(self, area: list, kind: str, label, gauges: bool = False) -> Optional[list]:
        i = self.catalog[kind].get(label)
        if i is None:
            return None
        if gauges:
            at = self.goff[kind] + i * self.gwords[kind]
            return area[at:at + self.gwords[kind]]
        at = self.coff[kind] + i * self.cwords[kind]
        return area[at:at + self.cwords[kind]]

    def fold_into(self, other: "Zone") -> None:
        """This zone has no worker left: add its totals, by label, to
        `other`'s retired area (labels `other` does not know are dropped)."""
        total = self.counters()
        w = other.words
        for kind in KINDS:
            n = self.cwords[kind]
            for lab, i in self.catalog[kind].items():
                j = other.catalog[kind].get(lab)
                if j is None:
                    continue
                src = self.coff[kind] + i * n
                dst = other.retired_at + other.coff[kind] + j * n
                for k in range(n):
                    if total[src + k]:
                        w[dst + k] = (w[dst + k] + total[src + k]) & 0xFFFFFFFFFFFFFFFF

    def close(self) -> None:
        self.words.release()
        try:
            self.mm.close()
        except BufferError:
            pass        # a forked child's view of it is not ours to worry about
