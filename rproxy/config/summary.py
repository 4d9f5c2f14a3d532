"""The summary `rproxy -t` prints: what will listen, route and run."""
from __future__ import annotations

from .model import Config


def summary(cfg: Config) -> str:
    n, why = cfg.worker_count()
    source = {"workers": "from `workers`", "threads": "from the largest `threads`",
              "cpus": "one per CPU"}[why]
    lines = [f"workers: {n} ({source})"]
    for srv in cfg.servers:
        lines.append(f"server {srv.label} (backlog {srv.backlog})")
        for ds in srv.downstreams:
            state = "" if ds.enabled else " [disabled]"
            lines.append(f"  downstream {ds.name}: {ds.addr}:{ds.port}, "
                         f"{ds.connections} connection(s) per worker{state}")
        for vh in srv.vhosts:
            names = ", ".join([vh.name, *vh.aliases])
            lines.append(f"  vhost {names}{' (default)' if vh.default else ''}")
            for rule in vh.rules:
                lines.append(f"    rule {rule.name}: {rule.match} {rule.pattern!r} -> "
                             f"{', '.join(rule.downstreams) or '(none)'} [{rule.lb_method}]")
    return "\n".join(lines) + "\n"
