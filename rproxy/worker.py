"""Worker process entry: build the fast path's runtime tables from the Config
and run its loop until told to stop.

Everything here runs once per worker (or per SIGUSR1), never per request.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import sys
from typing import Sequence

from . import accesslog, cache_manager, edge, errorlog, limits
from .config.model import Config, Downstream
from .master import logfiles

# what the fast path points into for the life of the worker (TLS contexts,
# header builders)
_KEEP: list = []

# exit codes the master acts on (see master/arbiter.py)
EXIT_OK = 0
EXIT_BOOT_ERROR = 3          # the worker could not start: do not respawn in a loop


def is_hostname(addr: str) -> bool:
    if addr.startswith("unix:"):
        return False
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, addr.strip("[]"))
            return False
        except OSError:
            pass
    return True


def sockaddr_for(ds: Downstream) -> tuple[int, bytes, str]:
    """(family, raw struct sockaddr, label) for a downstream address.

    Hostnames are resolved here when the worker starts, then again by the
    worker's Resolver thread (periodically and after a failed connect)."""
    label = f"{ds.addr}:{ds.port}"
    if ds.addr.startswith("unix:"):
        path = ds.addr[5:].encode()
        return socket.AF_UNIX, struct.pack("=H", socket.AF_UNIX) + path + b"\0", ds.addr
    try:
        packed = socket.inet_pton(socket.AF_INET, ds.addr)
        family = socket.AF_INET
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, ds.addr.strip("[]"))
            family = socket.AF_INET6
            label = f"[{ds.addr.strip('[]')}]:{ds.port}"
        except OSError:
            infos = socket.getaddrinfo(ds.addr, ds.port, type=socket.SOCK_STREAM)
            if not infos:
                raise OSError(f"cannot resolve downstream address {ds.addr!r}")
            family = infos[0][0]
            packed = socket.inet_pton(family, infos[0][4][0])
    if family == socket.AF_INET:
        raw = struct.pack("=H", family) + struct.pack("!H", ds.port) + packed + b"\0" * 8
    else:
        raw = struct.pack("=H", family) + struct.pack("!H", ds.port) + b"\0" * 4 + packed + b"\0" * 4
    return family, raw, label


def header_policy(headers) -> list[str]:
    """The request headers a rule adds, as the fast path's policy names."""
    if headers is None:
        return []
    out = [k for k in ("x_forwarded_for", "x_real_ip", "x_forwarded_proto", "x_forwarded_host",
                       "x_forwarded_port", "forwarded", "via") if getattr(headers, k)]
    if headers.x_forwarded_for and headers.x_forwarded_for_mode == "replace":
        out.append("x_forwarded_for_replace")
    return out


def build(cfg: Config, listener_fds: Sequence[tuple[int, int]], metrics=None, *, index: int = 0,
          generation: int = 0):
    """A fast-path Worker for `cfg`; listener_fds: (fd, server index) pairs;
    metrics: (zone buffer, Zone.worker_args) of this worker's metrics slot."""
    from .fastpath import Worker, rule_set_cache, rule_set_compress

    ds_index: dict[tuple[int, str], int] = {}
    all_ds: list[Downstream] = []
    for si, srv in enumerate(cfg.servers):
        for ds in srv.downstreams:
            ds_index[(si, ds.name)] = len(all_ds)
            all_ds.append(ds)
    buffer_size = max((s.buffer_size for s in cfg.servers), default=32768)
    logfiles.open_all(cfg)          # opened by the master already; a no-op unless run on its own
    logfiles.retain([cfg])          # what was inherited for another generation
    logfiles.use_error_log(cfg)
    w = Worker(len(cfg.servers), len(all_ds), len(listener_fds), buffer_size=buffer_size,
               errfd=errorlog.fd(), loglevel=errorlog.level(), shutdown_timeout=cfg.shutdown_timeout)
    for i, ds in enumerate(all_ds):
        family, raw, label = sockaddr_for(ds)
        if is_hostname(ds.addr):
            w.set_hostname(i)
        w.set_downstream(i, ds.name, label, family, raw, connections=ds.connections, retry=ds.retry,
                         connect_timeout=ds.connect_timeout, read_timeout=ds.read_timeout,
                         write_timeout=ds.write_timeout, idle_timeout=ds.idle_timeout,
                         max_requests=ds.max_requests, enabled=ds.enabled, weight=ds.weight,
                         max_age=ds.max_age, high_watermark=ds.high_watermark, pipeline=ds.pipeline,
                         max_fails=ds.max_fails, fail_timeout=ds.fail_timeout,
                         max_connections=ds.max_connections or 4 * ds.connections,
                         proxy_protocol={"off": 0, "v1": 1, "v2": 2}[ds.proxy_protocol])
        if ds.health_check is not None:
            hc = ds.health_check
            w.set_health_check(i, hc.path, hc.interval, hc.timeout, hc.rise, hc.fall)
    caches = {c.name: c for c in cfg.caches}
    kzs = cache_manager.zones_for(cfg) if caches else {}   # the master's, inherited through fork
    owned = set()
    for si, srv in enumerate(cfg.servers):
        port = 0 if srv.addr.startswith("unix:") else srv.port
        w.set_server(si, read_timeout=srv.read_timeout, write_timeout=srv.write_timeout,
                     keepalive_timeout=srv.keepalive_timeout, pending_timeout=srv.pending_timeout,
                     max_request_line=srv.max_request_line, max_header_size=srv.max_header_size,
                     max_headers=srv.max_headers, client_max_body_size=srv.client_max_body_size,
                     max_pending=srv.max_pending, nvhosts=len(srv.vhosts), port=port,
                     tls=bool(srv.ssl and srv.ssl.enabled), high_watermark=srv.high_watermark,
                     client_body_buffer_size=srv.client_body_buffer_size,
                     response_buffer_size=srv.response_buffer_size, max_temp_file_size=srv.max_temp_file_size,
                     client_body_timeout=srv.client_body_timeout or srv.read_timeout,
                     send_timeout=srv.send_timeout or srv.write_timeout,
                     http2=srv.http2 if srv.http2 is not None else bool(srv.ssl and srv.ssl.enabled),
                     http2_max_streams=srv.http2_max_concurrent_streams,
                     http2_max_resets=srv.http2_max_resets_per_second,
                     http2_max_ctl=srv.http2_max_control_frames_per_second,
                     http2_max_cont=srv.http2_max_continuations)
        w.set_underscores(si, srv.underscores_in_headers)
        for vi, vh in enumerate(srv.vhosts):
            globs = [vh.name, *vh.aliases]
            w.set_vhost(si, vi, globs, vh.default, len(vh.rules), strip_headers=vh.strip_headers)
            for ri, rule in enumerate(vh.rules):
                headers = rule.headers or vh.headers
                if headers:
                    owned.update(e.name for e in headers.x509_extensions)
                replace = rule.rewrite_dst if rule.rewrite_dst is not None else rule.replace_path
                w.set_rule(si, vi, ri, rule.name, rule.match, rule.pattern,
                           [ds_index[(si, n)] for n in rule.downstreams], rule.lb_method,
                           header_policy=header_policy(headers), replace=replace,
                           rewrite_1x=rule.rewrite_dst is not None, passthrough=rule.passthrough,
                           allow_redirect=rule.allow_redirect, redirect_filter=rule.redirect_filter,
                           up_read_timeout=rule.upstream_read_timeout,
                           up_write_timeout=rule.upstream_write_timeout,
                           request_buffering=srv.request_buffering if rule.request_buffering is None
                           else rule.request_buffering,
                           response_buffering=srv.response_buffering if rule.response_buffering is None
                           else rule.response_buffering)
                if rule.compress:
                    rule_set_compress(si, vi, ri, rule.compress, rule.compress_types,
                                      rule.compress_min_size)
                if rule.cache is not None:
                    path = caches[rule.cache].path
                    os.makedirs(path, mode=0o700, exist_ok=True)
                    kz = kzs.get(rule.cache)
                    rule_set_cache(si, vi, ri, path, rule.cache_lock, rule.cache_use_stale,
                                   kz.mm if kz is not None else None)
                if edge.needs_edge(rule):
                    w.set_edge(si, vi, ri, **edge.worker_args(rule))
    w.set_owned_headers(sorted(owned))
    edge.configure_mime()
    if metrics is not None:
        buf, args = metrics
        w.set_metrics(buf, args["worker_word"], args["servers"], args["rules"], args["unrouted"],
                      args["downstreams"], os.getpid(), generation, index)
    w.set_temp_dir(cfg.temp_dir or os.environ.get("TMPDIR") or "/tmp")
    for li, (fd, si) in enumerate(listener_fds):
        w.set_listener(li, fd, si)
    if cfg.uses_tls():
        from . import tls

        _KEEP.append(tls.configure_worker(w, cfg, ds_index, errorlog.log))
    else:
        set_https_redirects(cfg)
    accesslog.configure_worker(cfg)
    limits.configure_worker(cfg)    # edge policy: access rules, deny, rate limits (limits.pxi)
    names = [(i, ds) for i, ds in enumerate(all_ds) if is_hostname(ds.addr)]
    if names:
        from .resolver import Resolver      # threading: only for hostname downstreams

        Resolver(w, names).start()
    return w


def set_https_redirects(cfg: Config) -> None:
    """The vhosts that answer plain HTTP with a redirect to HTTPS (done by
    tls.configure_worker when the configuration has TLS: a redirect's
    target is usually another server's TLS listener)."""
    from .fastpath import set_https_redirect

    for si, srv in enumerate(cfg.servers):
        for vi, vh in enumerate(srv.vhosts):
            if vh.https_redirect:
                set_https_redirect(si, vi, vh.https_redirect_port)


def run(cfg: Config, listener_fds: Sequence[tuple[int, int]], index: int, generation: int,
        ready_fd: int | None = None, master_pid: int | None = None, metrics=None) -> int:
    """Body of a worker process; returns its exit code.

    ready_fd: written to once the worker is built (the master waits for that
    before it drains the previous generation on reload, and counts a worker
    that dies before it as a boot failure).  master_pid: the parent this
    worker must not outlive."""
    from . import fastpath

    # A worker must not outlive its master, even one killed with SIGKILL.
    # (Set after any uid change: the kernel clears it when credentials change;
    # the master drops privileges before it forks, so none happens here.)
    fastpath.set_parent_death_signal(signal.SIGTERM)
    if master_pid is not None and os.getppid() != master_pid:
        # The master died before the line above took effect: the kernel will
        # never send that signal, so stop now rather than serve as an orphan.
        return EXIT_OK
    from . import proctitle

    proctitle.set_title(f"rproxy: worker {index} (gen {generation})")
    try:
        fault = os.environ.get("RPROXY_FAULT_BOOT_GENERATION")
        if fault and generation >= int(fault):
            # fault injection for the supervision tests: no valid
            # configuration fails a worker at boot without touching the network
            raise RuntimeError(f"boot failure injected by RPROXY_FAULT_BOOT_GENERATION={fault}")
        if cfg.memtrim_sz:
            fastpath.set_malloc_trim_threshold(cfg.memtrim_sz)
        w = build(cfg, listener_fds, metrics, index=index, generation=generation)
    except Exception as e:  # noqa: BLE001 - any failure here is a boot error
        errorlog.error(f"worker {index} (gen {generation}): cannot start: {e}")
        return EXIT_BOOT_ERROR
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    while True:
        outcome = w.run()
        if outcome == "reopen":
            reopen_logs(index, generation)
            continue
        if outcome == "error":
            return 1
        return EXIT_OK


def reopen_logs(index: int = 0, generation: int = 0) -> None:
    """SIGUSR1: reopen the log files this worker holds, error and access
    logs (the loop wrote out its buffered lines before handing over)."""
    for problem in logfiles.reopen():
        errorlog.error(f"worker {index} (gen {generation}): {problem}")
    errorlog.info(f"worker {index} (gen {generation}): log files reopened")


def main_for_child(cfg: Config, listener_fds, index: int, generation: int, *,
                   ready_fd: int | None = None, master_pid: int | None = None, metrics=None) -> None:
    """Run in a freshly forked child; never returns."""
    code = 1
    try:
        code = run(cfg, listener_fds, index, generation, ready_fd=ready_fd, master_pid=master_pid,
                   metrics=metrics)
    except BaseException as e:  # noqa: BLE001
        try:
            errorlog.error(f"worker {index}: crashed: {e!r}")
        finally:
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
