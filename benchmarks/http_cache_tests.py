"""Run the public HTTP cache test suite (npm http-cache-tests 0.4.5) against
rproxy with its cache on, and count passes beside the suite's published
results (nginx, Varnish, ...), per group and kind.

    python -P benchmarks/http_cache_tests.py [--workdir DIR] [--out results/http-cache-tests/rproxy.json]

Needs node and npm (the package is installed into --workdir once, then runs
offline).  The suite's origin listens on 127.0.0.1:ORIGIN; rproxy in front
on 127.0.0.1:PROXY forwards everything (PUT included) through a rule with
`cache = main`.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import free_port, wait_port  # noqa: E402

VERSION = "0.4.5"
GROUPS_JS = """import tests from '%s/tests/index.mjs'
const out = {}
for (const s of tests) for (const t of s.tests) out[t.id] = {suite: s.id, kind: t.kind || 'required'}
console.log(JSON.stringify(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "rproxy-http-cache-tests"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "http-cache-tests", "rproxy.json"))
    ap.add_argument("--groups", help="also write each test's suite and kind here (JSON)")
    a = ap.parse_args()
    a.workdir = os.path.abspath(a.workdir)
    pkg = os.path.join(a.workdir, "node_modules", "http-cache-tests")
    if not os.path.isdir(pkg):
        os.makedirs(a.workdir, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"http-cache-tests@{VERSION}"], cwd=a.workdir,
                       check=True, stdout=subprocess.DEVNULL)
    origin, proxy = free_port(), free_port()
    cache = tempfile.mkdtemp(prefix="rproxy-hct-cache-")
    conf = os.path.join(cache, "rproxy.conf")
    with open(conf, "w") as f:
        f.write(f"""workers = 1
cache main {{ path = "{cache}/entries" }}
server {{
    addr = 127.0.0.1
    port = {proxy}
    downstream o {{ addr = 127.0.0.1  port = {origin}  connections = 4  max-fails = 0 }}
    vhost "*" {{ rule all {{ uri-prefix = "/"  downstreams = {{ o }}  cache = main  cache-lock = true
                             cache-use-stale = {{ error, timeout, updating }} }} }}
}}
""")
    env = dict(os.environ, npm_config_port=str(origin), npm_config_protocol="http",
               npm_config_pidfile=os.path.join(cache, "origin.pid"))
    o = subprocess.Popen(["node", "server/server.mjs"], cwd=pkg, env=env, stdout=subprocess.DEVNULL)
    rproxy = os.path.join(os.path.dirname(sys.executable), "rproxy")
    p = subprocess.Popen([rproxy if os.path.exists(rproxy) else "rproxy", "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_port(origin, 30.0)
        wait_port(proxy, 30.0)
        out = subprocess.run(["npm", "run", "--silent", "cli", f"--base=http://127.0.0.1:{proxy}"], cwd=pkg,
                             capture_output=True, text=True, timeout=600, check=True).stdout
        results = json.loads(out)
    finally:
        p.send_signal(signal.SIGTERM)
        o.send_signal(signal.SIGTERM)
        p.wait(10)
        o.wait(10)
        shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    js = os.path.join(a.workdir, "groups.mjs")
    with open(js, "w") as f:
        f.write(GROUPS_JS % pkg)
    groups = json.loads(subprocess.run(["node", "--no-warnings", js], capture_output=True, text=True,
                                       check=True).stdout)
    if a.groups:
        with open(a.groups, "w") as f:
            json.dump(groups, f)
    others = {n: json.load(open(os.path.join(pkg, "results", f"{n}.json"))) for n in ("nginx", "varnish", "squid")}
    print(f"{'':28} {'rproxy':>8} " + " ".join(f"{n:>8}" for n in others))
    print(f"{'passes (of %d)' % len(results):28} {sum(v is True for v in results.values()):>8} "
          + " ".join(f"{sum(d.get(k) is True for k in results):>8}" for d in others.values()))
    by = collections.defaultdict(list)
    for k in results:
        g = groups.get(k, {})
        by[(g.get("suite", "?"), g.get("kind", "?"))].append(k)
    for (suite, kind), ids in sorted(by.items()):
        print(f"{suite + ' / ' + kind:28} {sum(results[k] is True for k in ids):>4}/{len(ids):<3} "
              + " ".join(f"{sum(d.get(k) is True for k in ids):>8}" for d in others.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
