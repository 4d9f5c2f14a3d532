"""`rproxy top`: a live terminal view of a running rproxy (curses, stdlib).

    rproxy top -c /etc/rproxy/rproxy.conf      (the status { } listener it names)
    rproxy top --status http://127.0.0.1:9145

Every second it reads /status (JSON) and shows, per rule, its downstreams
(up/down, rtt, in flight, pending, requests/s, 5xx rate, pool connections),
then the busiest vhosts and the workers.  Rates are the difference between
two readings.  `q` quits.  Plain curses over any terminal, so it works over
ssh; `--once` prints one screen (no rates) without curses, for scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

REFRESH = 1.0


def status_url(args) -> str:
    if args.status:
        url = args.status.rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        if not url.endswith("/status"):
            url += "/status"
        return url
    from ..config import ConfigErrors, load

    try:
        cfg = load(args.config)
    except ConfigErrors as e:
        raise SystemExit(f"rproxy top: {args.config} is invalid:\n{e.render()}")
    except OSError as e:
        raise SystemExit(f"rproxy top: cannot read {args.config}: {e.strerror or e}")
    if cfg.status is None:
        raise SystemExit(f"rproxy top: {args.config} has no status {{ }} block (the listener top reads); "
                         "add one, or give --status URL")
    addr = cfg.status.addr
    if addr in ("0.0.0.0", "::"):
        addr = "127.0.0.1" if addr == "0.0.0.0" else "::1"
    host = f"[{addr}]" if ":" in addr else addr
    return f"http://{host}:{cfg.status.port}/status"


def fetch(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# ---- rendering (pure: snapshot in, lines out) ----------------------------------------

def _total(classes: dict) -> int:
    return sum(classes.values())


def _rate(now: Optional[float], before: Optional[float], dt: float) -> Optional[float]:
    if now is None or before is None or dt <= 0:
        return None
    return max(0.0, (now - before) / dt)


def _fmt_rate(r: Optional[float]) -> str:
    return "-" if r is None else (f"{r:.0f}" if r >= 100 else f"{r:.1f}")


def _fmt_ms(s: Optional[float]) -> str:
    return "-" if s is None else f"{s * 1000:.1f}"


def render(snap: dict, prev: Optional[dict], dt: float, url: str, error: Optional[str] = None) -> list:
    lines = []
    p = snap["process"]
    up_for = int(time.time() - p["started_at"])
    lines.append(f"rproxy top  {url}  pid {p['pid']}  generation {p['generation']}  "
                 f"workers {p['workers']}/{p['workers_configured']}  restarts {p['worker_restarts']}  "
                 f"reloads {p['reloads']['ok']} ok / {p['reloads']['failed']} failed  "
                 f"up {up_for // 3600}h{up_for // 60 % 60:02d}m")
    if error:
        lines.append(f"!! {error} (showing the last reading)")
    lines.append("")
    prev_ds = {(d["server"], d["downstream"]): d for d in (prev or {}).get("downstreams", [])}
    ds_by = {(d["server"], d["downstream"]): d for d in snap["downstreams"]}
    prev_rules = {(r["server"], r["vhost"], r["rule"]): r for r in (prev or {}).get("rules", [])}
    head = f"  {'DOWNSTREAM':<22} {'STATE':<5} {'RTT ms':>7} {'INFLT':>5} {'PEND':>5} {'REQ/s':>7} " \
           f"{'5xx%':>6} {'IDLE':>4} {'BUSY':>4} {'CONN':>4} {'DOWN':>4}"
    for r in snap["rules"]:
        if not r["rule"]:
            continue
        key = (r["server"], r["vhost"], r["rule"])
        pr = prev_rules.get(key)
        rate = _rate(_total(r["requests"]), pr and _total(pr["requests"]), dt) if prev else None
        lines.append(f"RULE {r['vhost']}/{r['rule']}  on {r['server']}   req/s {_fmt_rate(rate)}   "
                     f"pending {r['pending']}   pending timeouts {r['pending_timeouts']}")
        lines.append(head)
        names = [d["downstream"] for d in snap["downstreams"]
                 if d["server"] == r["server"] and [r["vhost"], r["rule"]] in d["rules"]]
        for name in names:
            d = ds_by[(r["server"], name)]
            pd = prev_ds.get((r["server"], name))
            tot, err = _total(d["responses"]), d["responses"]["5xx"]
            rate = _rate(tot, pd and _total(pd["responses"]), dt) if prev else None
            if pd is not None and tot > _total(pd["responses"]):
                errpct = f"{100.0 * (err - pd['responses']['5xx']) / (tot - _total(pd['responses'])):.1f}"
            else:
                errpct = "-"
            state = "UP" if d["up"] else ("OFF" if not d["enabled"] else "DOWN")
            c = d["connections"]
            lines.append(f"  {name[:22]:<22} {state:<5} {_fmt_ms(d['rtt_seconds']):>7} {d['in_flight']:>5} "
                         f"{d['pending']:>5} {_fmt_rate(rate):>7} {errpct:>6} {c['idle']:>4} {c['busy']:>4} "
                         f"{c['connecting']:>4} {c['down']:>4}")
        lines.append("")
    # busiest vhosts
    by_vhost: dict = {}
    for r in snap["rules"]:
        if not r["vhost"]:
            continue
        pr = prev_rules.get((r["server"], r["vhost"], r["rule"]))
        k = (r["server"], r["vhost"])
        cur = by_vhost.setdefault(k, [0.0, 0, 0])
        cur[1] += _total(r["requests"])
        cur[2] += r["requests"]["5xx"]
        if prev and pr is not None:
            cur[0] += (_total(r["requests"]) - _total(pr["requests"])) / dt if dt > 0 else 0
    lines.append(f"BUSIEST VHOSTS   {'REQ/s':>7} {'REQUESTS':>10} {'5xx':>8}")
    for (srv, vh), (rate, total, err) in sorted(by_vhost.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))[:5]:
        lines.append(f"  {vh[:30]:<30} {_fmt_rate(rate if prev else None):>7} {total:>10} {err:>8}   {srv}")
    lines.append("")
    ws = snap["workers"]
    lines.append(f"WORKERS {len(ws)}: " + "  ".join(
        f"#{w['index']} pid {w['pid']} gen {w['generation']} clients {w['clients']}" for w in ws))
    return lines


# ---- the terminal ----------------------------------------------------------------------

def run_curses(url: str, refresh: float) -> int:
    import curses

    def loop(scr) -> int:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        scr.timeout(100)
        prev, prev_t, prev_dt, snap, error = None, 0.0, 0.0, None, None
        next_at = 0.0
        while True:
            now = time.monotonic()
            if now >= next_at:
                next_at = now + refresh
                try:
                    new = fetch(url)
                    if snap is not None:
                        prev, prev_dt = snap, now - prev_t
                    snap, prev_t, error = new, now, None
                except (OSError, ValueError, urllib.error.URLError) as e:
                    error = f"cannot read {url}: {getattr(e, 'reason', None) or e}"
                scr.erase()
                h, w = scr.getmaxyx()
                if snap is None:
                    lines = [f"rproxy top  {url}", "", error or "connecting..."]
                else:
                    lines = render(snap, prev, prev_dt, url, error)
                lines = lines[:h - 1] + [""] * max(0, h - 1 - len(lines))
                lines.append("q: quit")
                for y, line in enumerate(lines[:h]):
                    try:
                        scr.addnstr(y, 0, line, w - 1)
                    except curses.error:
                        pass
                scr.refresh()
            ch = scr.getch()
            if ch in (ord("q"), ord("Q")):
                return 0

    # the terminal's real size (ioctl), not LINES/COLUMNS inherited from elsewhere
    os.environ.pop("LINES", None)
    os.environ.pop("COLUMNS", None)
    return curses.wrapper(loop)


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="rproxy top", description="Live view of a running rproxy "
                                 "(reads its status listener every second; q quits).")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", metavar="FILE", default="/etc/rproxy/rproxy.conf",
                     help="the running rproxy's configuration (its status { } block says where to look)")
    src.add_argument("--status", metavar="URL", help="the status listener, e.g. http://127.0.0.1:9145")
    ap.add_argument("--once", action="store_true", help="print one reading without curses and exit")
    ap.add_argument("--interval", type=float, default=REFRESH, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    url = status_url(args)
    if args.once:
        try:
            snap = fetch(url)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"rproxy top: cannot read {url}: {getattr(e, 'reason', None) or e}\n")
            return 1
        sys.stdout.write("\n".join(render(snap, None, 0.0, url)) + "\n")
        return 0
    if not sys.stdout.isatty():
        sys.stderr.write("rproxy top: needs a terminal (or --once)\n")
        return 1
    return run_curses(url, args.interval)
