"""End-to-end comparison: rproxy beside nginx and HAProxy, one worker each.

Drives the shared harness (../shared/bench/compare.py: interleaved rounds,
the proxy pinned to core 0, wrk and the backend on core 1) with rproxy as the
candidate, keeps its JSON, and renders the markdown table the README quotes.

    python benchmarks/run_compare.py                       # the full default run (~4-5 min)
    python benchmarks/run_compare.py --scenarios small,1m --mem-conns 0
    python benchmarks/run_compare.py --tls                 # HTTPS scenarios (needs TLS)
    python benchmarks/run_compare.py --access-log          # rproxy writing an access log (a file)
    python benchmarks/run_compare.py --metrics             # rproxy with its status listener (metrics on)
    python benchmarks/run_compare.py --render results/X.json   # table from an earlier run
    python benchmarks/run_compare.py --smoke               # CI: seconds, asserts only that it ran

Ratios from one run are the currency (absolute numbers move on a shared
2-core machine); read us/req and cpuEff where wrk's core is the bottleneck.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_harness() -> str:
    """shared/bench/compare.py next to the checkout, or next to a directory
    above it (a git worktree may sit deeper than the main checkout)."""
    d = os.path.dirname(HERE)
    while True:
        parent = os.path.dirname(d)
        candidate = os.path.join(parent, "shared", "bench", "compare.py")
        if os.path.exists(candidate) or parent == d:
            return candidate if os.path.exists(candidate) else \
                os.path.abspath(os.path.join(HERE, "..", "..", "shared", "bench", "compare.py"))
        d = parent


DEFAULT_HARNESS = _find_harness()
TEMPLATE = os.path.join(HERE, "rproxy.conf.tmpl")
TLS_TEMPLATE = os.path.join(HERE, "rproxy-tls.conf.tmpl")
ACCESS_LOG_TEMPLATE = os.path.join(HERE, "rproxy-accesslog.conf.tmpl")
METRICS_TEMPLATE = os.path.join(HERE, "rproxy-metrics.conf.tmpl")
RESULTS = os.path.join(HERE, "results")


def rproxy_command() -> str:
    """The rproxy of the Python running this script (a venv's, say)."""
    local = os.path.join(os.path.dirname(sys.executable), "rproxy")
    return local if os.path.exists(local) else (shutil.which("rproxy") or "rproxy")


def fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.2f} ms"


def render(path: str) -> str:
    """Markdown tables (load scenarios, then memory) from a compare.py JSON."""
    with open(path) as f:
        d = json.load(f)
    meta = d["meta"]
    lines = [f"Run {meta.get('started', '?')} on {meta.get('host', '?')} ({meta.get('cpus', '?')} CPUs, "
             f"kernel {meta.get('kernel', '?')}); command: `{' '.join(meta.get('argv', []))}`", "",
             "| scenario | target | req/s | p50 | p99 | us/req | x nginx (min-max) | cpuEff |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    noisy = []
    for name, sc in d["scenarios"].items():
        for target, s in sc["summary"].items():
            if target == "direct":
                continue
            ratio = s.get("ratio_vs_nginx")
            rng = (f"{ratio:.2f} ({s.get('ratio_vs_nginx_min', 0):.2f}-{s.get('ratio_vs_nginx_max', 0):.2f})"
                   if ratio is not None else "-")
            eff = s.get("cpu_eff_vs_nginx")
            us = s.get("proxy_cpu_us_per_req")
            lines.append(f"| {name} | {target} | {s['rps']:,.0f} | {fmt_ms(s.get('p50_ms'))} | "
                         f"{fmt_ms(s.get('p99_ms'))} | {us if us is not None else '-'} | {rng} | "
                         f"{eff if eff is not None else '-'} |")
            if s.get("foreign_cpu_pct_max", 0) > 5:
                noisy.append(f"{name}/{target} ({s['foreign_cpu_pct_max']:.0f}%)")
    if d.get("memory"):
        lines += ["", "| idle keep-alive connections | RSS before | RSS after | bytes/conn | marginal |",
                  "|---|---:|---:|---:|---:|"]
        for target, m in d["memory"].items():
            lines.append(f"| {target} ({m['connections']}) | {m['rss_before_mb']} MB | {m['rss_after_mb']} MB | "
                         f"{m['bytes_per_conn']} | {m['marginal_bytes_per_conn']} |")
    if noisy:
        lines += ["", "Other processes used CPU during: " + ", ".join(noisy) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", default=os.environ.get("RPROXY_BENCH_HARNESS", DEFAULT_HARNESS))
    ap.add_argument("--scenarios", default=None, help="passed to compare.py (default: its own)")
    ap.add_argument("--mem-conns", default=None)
    ap.add_argument("--tls", action="store_true", help="run the HTTPS scenarios (tls group)")
    ap.add_argument("--access-log", action="store_true",
                    help="rproxy writes an access log to a file in the harness's work dir "
                         "(rproxy-accesslog.conf.tmpl), to measure what logging costs")
    ap.add_argument("--metrics", action="store_true",
                    help="rproxy with its status listener, every worker counting into the metrics zone "
                         "(rproxy-metrics.conf.tmpl), to measure what metrics cost")
    ap.add_argument("--render", metavar="JSON", help="only print the table of an earlier run")
    ap.add_argument("--smoke", action="store_true", help="a few seconds, for CI: checks the pipeline works")
    ap.add_argument("--out", default=None, help="JSON path (default: results/<date>-<scenarios>.json)")
    ap.add_argument("extra", nargs="*", help="more compare.py arguments (after --)")
    args = ap.parse_args(argv)
    if args.render:
        sys.stdout.write(render(args.render))
        return 0
    if not os.path.exists(args.harness):
        sys.stderr.write(f"run_compare: no harness at {args.harness} (set --harness)\n")
        return 2
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    cmd = [sys.executable, args.harness, "--candidate", rproxy_command() + " -c {conf}",
           "--candidate-name", "rproxy"]
    if args.tls + args.access_log + args.metrics > 1:
        ap.error("--tls, --access-log, --metrics: pick one template")
    template = TLS_TEMPLATE if args.tls else ACCESS_LOG_TEMPLATE if args.access_log else \
        METRICS_TEMPLATE if args.metrics else TEMPLATE
    cmd += ["--candidate-conf", template]
    scenarios = args.scenarios or ("tls" if args.tls else None)
    if args.smoke:
        scenarios = scenarios or "small"
        cmd += ["--rounds", "1", "--duration", "1", "--mem-conns", "0", "--targets", "nginx",
                "--warmup", "1", "--noisy-retries", "0"]
    if scenarios:
        cmd += ["--scenarios", scenarios]
    if args.mem_conns is not None and not args.smoke:
        cmd += ["--mem-conns", args.mem_conns]
    label = (scenarios or "default").replace(",", "+") + ("-accesslog" if args.access_log else "") \
        + ("-metrics" if args.metrics else "")
    out = args.out or os.path.join(RESULTS, f"{stamp}-{label}.json")
    cmd += ["--json", out, *args.extra]
    print("+ " + " ".join(cmd), file=sys.stderr)
    rc = subprocess.call(cmd)
    if rc != 0 or not os.path.exists(out):
        sys.stderr.write(f"run_compare: compare.py exited with {rc}\n")
        return rc or 1
    table = render(out)
    with open(out[:-5] + ".md", "w") as f:
        f.write(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
