"""The metrics zone without processes: slots, folding, reloads, labels."""
from __future__ import annotations

import ipaddress

import pytest

from rproxy.config import loads
from rproxy.metrics import expo
from rproxy.metrics.server import allowed
from rproxy.metrics.zone import Zone, labels_of, layout


def cfg_text(rules=("a", "b"), ds=("d1", "d2")):
    dss = "\n".join(f"downstream {d} {{ addr = 127.0.0.1  port = {9000 + i} }}" for i, d in enumerate(ds))
    rs = "\n".join(f'rule {r} {{ uri-prefix = "/{r}/"  downstreams = {{ {ds[0]} }} }}' for r in rules)
    return f"""status {{ port = 9999 }}
server {{ addr = 127.0.0.1  port = 8080
{dss}
vhost "*" {{ default = true
{rs}
}} }}"""


def count(zone, slot, kind, label, word, n=1):
    i = zone.catalog[kind][label]
    base = zone.slot_base(slot) + zone.wg_words + zone.coff[kind] + i * zone.cwords[kind]
    zone.words[base + word] += n


def requests(zone, rule, cls=2):
    total = zone.counters()
    return zone.record(total, "rule", ("127.0.0.1:8080", "*", rule))[layout()["rule_counters"]["class"] + cls]


def test_slots_fold_into_retired_totals_and_are_reused():
    cfg = loads(cfg_text())
    z = Zone(labels_of(cfg), 4)
    s0, s1 = z.alloc(), z.alloc()
    c2xx = layout()["rule_counters"]["class"] + 2
    count(z, s0, "rule", ("127.0.0.1:8080", "*", "a"), c2xx, 5)
    count(z, s1, "rule", ("127.0.0.1:8080", "*", "a"), c2xx, 7)
    assert requests(z, "a") == 12
    z.release(s0)                     # its worker exited: folded, the slot cleared
    assert requests(z, "a") == 12
    assert s0 not in z.used and not any(z.words[z.slot_base(s0):z.slot_base(s0) + z.slot_words])
    s2 = z.alloc()
    assert s2 is not None
    count(z, s2, "rule", ("127.0.0.1:8080", "*", "a"), c2xx, 1)
    assert requests(z, "a") == 13
    assert {z.alloc(), z.alloc()} - {None} and z.alloc() is None      # 4 slots in all


def test_slots_do_not_share_cache_lines():
    z = Zone(labels_of(loads(cfg_text())), 3)
    assert z.slot_words % 8 == 0 and (z.slots_at * 8) % 64 == 0


def test_worker_records_stay_inside_the_zone_and_apart():
    cfg = loads(cfg_text())
    z = Zone(labels_of(cfg), 2)
    seen = set()
    for slot in (0, 1):
        a = z.worker_args(cfg, slot)
        words = [c for c, _ in a["servers"]] + [g for _, g in a["servers"]] + a["unrouted"] + \
            [c for c, _ in a["rules"].values()] + [c for c, _ in a["downstreams"]]
        for w in words:
            assert z.slot_base(slot) <= w < z.slot_base(slot) + z.slot_words
            assert w not in seen
            seen.add(w)


def test_reload_within_capacity_keeps_records_and_adds_new_ones():
    z = Zone(labels_of(loads(cfg_text())), 2)
    before = dict(z.catalog["rule"])
    bigger = labels_of(loads(cfg_text(rules=("a", "b", "c"))))
    assert z.fits(bigger)
    z.assign(bigger)
    for lab, i in before.items():
        assert z.catalog["rule"][lab] == i
    assert ("127.0.0.1:8080", "*", "c") in z.catalog["rule"]
    huge = labels_of(loads(cfg_text(rules=tuple(f"r{i}" for i in range(40)))))
    assert not z.fits(huge)


def test_an_outgrown_zone_folds_by_label_into_the_new_one():
    old = Zone(labels_of(loads(cfg_text())), 2)
    c2xx = layout()["rule_counters"]["class"] + 2
    s = old.alloc()
    count(old, s, "rule", ("127.0.0.1:8080", "*", "a"), c2xx, 3)
    count(old, s, "rule", ("127.0.0.1:8080", "*", "b"), c2xx, 4)
    new_cfg = loads(cfg_text(rules=("b",) + tuple(f"r{i}" for i in range(40))))
    new = Zone(labels_of(new_cfg), 2)
    old.release(s)
    old.fold_into(new)
    assert requests(new, "b") == 4                          # kept by label
    assert ("127.0.0.1:8080", "*", "a") not in new.catalog["rule"]   # gone with its rule


def test_snapshot_and_prometheus_agree():
    cfg = loads(cfg_text())
    z = Zone(labels_of(cfg), 2)
    s = z.alloc()
    count(z, s, "rule", ("127.0.0.1:8080", "*", "b"), layout()["rule_counters"]["class"] + 5, 2)
    d = layout()["ds_counters"]
    count(z, s, "ds", ("127.0.0.1:8080", "d1"), d["ttfb"] + 0, 3)      # 3 samples <= 0.5 ms
    count(z, s, "ds", ("127.0.0.1:8080", "d1"), d["ttfb"] + 15, 600)   # their sum, us
    process = {"pid": 1, "generation": 1, "workers": 1, "workers_configured": 1, "worker_restarts": 0,
               "reloads": {"ok": 0, "failed": 0}, "config_loaded_at": 0.0, "started_at": 0.0}
    snap = expo.snapshot(cfg, [z], process, [])
    b = next(r for r in snap["rules"] if r["rule"] == "b")
    assert b["requests"]["5xx"] == 2
    d1 = next(x for x in snap["downstreams"] if x["downstream"] == "d1")
    assert d1["first_byte_seconds"]["count"] == 3 and d1["first_byte_seconds"]["sum"] == pytest.approx(0.0006)
    assert d1["first_byte_seconds"]["buckets"][0] == [0.0005, 3]
    text = expo.prometheus(snap)
    assert 'rproxy_requests_total{server="127.0.0.1:8080",vhost="*",rule="b",code="5xx"} 2' in text
    assert 'rproxy_downstream_first_byte_seconds_bucket{server="127.0.0.1:8080",downstream="d1",le="0.0005"} 3' in text
    assert 'rproxy_downstream_first_byte_seconds_bucket{server="127.0.0.1:8080",downstream="d1",le="+Inf"} 3' in text
    assert 'rproxy_downstream_first_byte_seconds_count{server="127.0.0.1:8080",downstream="d1"} 3' in text


def test_label_values_are_escaped():
    assert expo._labels(rule='a"b\\c\nd') == '{rule="a\\"b\\\\c\\nd"}'


@pytest.mark.parametrize("peer,allow,ok", [
    ("127.0.0.1", ["127.0.0.1/32"], True),
    ("127.0.0.2", ["127.0.0.1/32"], False),
    ("10.1.2.3", ["10.0.0.0/8"], True),
    ("::1", ["127.0.0.1/32", "::1/128"], True),
    ("::ffff:127.0.0.1", ["127.0.0.1/32"], True),          # v4-mapped on a dual-stack socket
    ("fe80::1%eth0", ["fe80::/10"], True),
    ("2001:db8::1", ["10.0.0.0/8"], False),
])
def test_allow_list(peer, allow, ok):
    assert allowed(peer, [ipaddress.ip_network(a) for a in allow]) is ok


def test_status_block_directives():
    from rproxy.config import ConfigErrors

    cfg = loads("status { addr = ::1  port = 9100  allow = { 10.0.0.0/8, 192.168.1.7 } }\n")
    assert (cfg.status.addr, cfg.status.port, cfg.status.allow) == ("::1", 9100, ("10.0.0.0/8", "192.168.1.7/32"))
    assert loads("").status is None
    with pytest.raises(ConfigErrors) as e:
        loads("status { allow = { 10.0.0.300/8 } }\n")
    assert "invalid address or network '10.0.0.300/8'" in e.value.render()
    assert loads("reload-on-change = yes\n").reload_on_change is True


def test_status_listener_cannot_be_a_server_listener():
    from rproxy.config import ConfigErrors

    with pytest.raises(ConfigErrors) as e:
        loads("status { port = 8080 }\nserver { port = 8080  downstream { addr = 127.0.0.1 port = 1 } }\n")
    assert "the status listener 127.0.0.1:8080 is also server 127.0.0.1:8080's listener" in e.value.render()
