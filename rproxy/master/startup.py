"""`rproxy -c FILE`: the master's start-up, in the order DESIGN.md §2 gives.

Everything that needs root happens before the privilege drop, because after
it the master never has root again:

  1. parse and validate (done by the caller: errors carry file:line:col)
  2. look up user/group, refuse to start twice on the same pidfile
  3. rlimits: RLIMIT_NOFILE = max-nofile exactly, core limit up to its hard limit
  4. bind every listener
  5. open the log files and load the TLS key material, still privileged
  6. daemonize when asked
  7. process title, signal handlers (recording only), pidfile
  8. drop privileges
  9. fork the workers and supervise them until told to stop
"""
from __future__ import annotations

import os

from .. import errorlog
from ..config.model import Config
from . import StartupError, daemon, logfiles, pidfile, privileges
from .arbiter import Arbiter


# Imported on demand only (TLS configured, hostname downstreams, managed
# certificates): preloaded when the dropped user could not import them later.
LAZY_MODULES = ("rproxy.tls", "rproxy.acme.store", "rproxy.resolver")


def preload_modules(cfg: Config | None = None, identity=None) -> None:
    """Import everything workers and reloads use while still privileged:
    after the drop, the install may not be readable by the new user.  The
    configuration parser only when that is so: otherwise the master never
    imports it (it parses in a short-lived child, config/isolated.py, which
    imports it as the dropped user on reload)."""
    import importlib

    from .. import fastpath, proctitle  # noqa: F401
    from ..metrics import master

    proctitle.preload()
    if cfg is not None and (cfg.status is not None or cfg.reload_on_change):
        for name in master.OPTIONAL_MODULES:
            importlib.import_module(name)
    if cfg is not None and identity is not None and os.geteuid() == 0:
        from ..config import isolated

        def become():           # as privileges.drop does, without its log line
            os.setresgid(identity.gid, identity.gid, identity.gid)
            if identity.user:
                os.initgroups(identity.user, identity.gid)
                os.setresuid(identity.uid, identity.uid, identity.uid)
            else:
                os.setgroups([identity.gid])

        lazy = (*master.OPTIONAL_MODULES, *LAZY_MODULES)
        if not isolated.importable_as(become, cfg.path, lazy):
            errorlog.info(f"the configuration parser cannot be imported as {identity}: "
                          "the master keeps it (and the other modules it imports on demand) loaded")
            from ..config import loader  # noqa: F401
            for name in lazy:
                importlib.import_module(name)


def load_tls(cfg: Config) -> None:
    """Build the TLS contexts of `cfg` (certificates, keys, CAs, CRLs read
    now); the workers forked later inherit them."""
    if not cfg.uses_tls():
        return
    from .. import tls

    try:
        tls.load(cfg)
    except tls.TlsError as e:
        raise StartupError(str(e)) from None


def prepare_acme(cfg: Config, owner=None) -> None:
    """state-dir and a certificate (self-signed until the CA's arrives) for
    every managed name, before the contexts are built.  A root master with a
    `user` does it in a child running as that user: the files are the
    user's, and the packaged unit gives root no CAP_DAC_OVERRIDE to write
    into the user's directory anyway."""
    if not cfg.uses_tls():
        return
    from ..acme import store

    if not store.managed(cfg):
        return
    uid, gid = (None, None) if owner is None or owner[0] == -1 else owner
    if uid is None or os.geteuid() != 0:
        try:
            store.prepare(cfg, errorlog.log)
        except OSError as e:
            raise StartupError(f"acme state-dir {store.state_dir(cfg)}: {e.strerror or e}") from None
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            store.prepare(cfg, errorlog.log)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, (getattr(e, "strerror", None) or str(e)).encode()[:1000])
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise StartupError(f"acme state-dir {store.state_dir(cfg)} (as the user): {why or 'failed'}")


def run_master(cfg: Config) -> int:
    """Start and run the master; returns the process exit code."""
    try:
        identity = privileges.resolve_identity(cfg.user, cfg.group)
        pidfile.refuse_if_running(cfg.pidfile)
        privileges.set_max_nofile(cfg.max_nofile)
        privileges.raise_core_limit()
        arbiter = Arbiter(cfg)
        arbiter.bind_listeners()
        if not cfg.daemonize:
            # the title as soon as there is a listener: what connects from now
            # on (and `ps`) sees a master, while TLS loading and the parser
            # probe (preload_modules) still take their time
            arbiter.set_title()
    except StartupError as e:
        errorlog.log("emerg", str(e))
        return 1
    # TLS key material is loaded here and log files are opened here: still
    # privileged, before daemonizing so their errors reach the terminal.
    # Reloads re-read them as the dropped user (privileges.unreadable_files
    # says which it cannot); log files are handed to that user so that it
    # can reopen them (logfiles.py).
    # what the drop hands over: the log files and the pidfile (uid -1: only the group changes)
    owner = None if identity is None else (-1 if identity.uid is None else identity.uid, identity.gid)
    try:
        logfiles.open_all(cfg, owner=owner)
    except logfiles.LogOpenError as e:
        errorlog.log("emerg", f"cannot open {e}")
        arbiter.close_listeners()
        return 1
    try:
        prepare_acme(cfg, owner)
        load_tls(cfg)
        from .. import edge
        edge.load_sticky_key(cfg, errorlog.log)     # still privileged: <state-dir> may be root's
    except StartupError as e:
        errorlog.log("emerg", str(e))
        arbiter.close_listeners()
        return 1
    preload_modules(cfg, identity)
    readiness = None
    pid_written = False
    try:
        if cfg.daemonize:
            readiness = daemon.detach(cfg.rootdir, arbiter.owned_fds() + logfiles.fds())   # only the daemon returns
            arbiter.set_title()
        arbiter.install_signals()
        if cfg.pidfile:
            pidfile.write(cfg.pidfile, owner)
            pid_written = True
        elif cfg.daemonize:
            errorlog.notice("daemonize without a pidfile: `rproxy -s` cannot find this master")
        if identity is not None:
            privileges.drop(identity)
            privileges.warn_about_reload_limits(cfg)
        if readiness is not None:
            readiness.done()
        logfiles.use_error_log(cfg)     # from here on, the configured error log
        logfiles.remember_stderr()
        return arbiter.run()
    except StartupError as e:
        errorlog.log("emerg", str(e))
        arbiter.close_listeners()
        return 1
    except Exception as e:  # noqa: BLE001 - the master must not die silently
        import traceback

        errorlog.log("crit", f"master crashed: {e!r}\n{traceback.format_exc()}")
        arbiter.begin_stop("fast")      # workers would get SIGTERM from the kernel anyway
        return 1
    finally:
        # (forked workers leave through os._exit and never get here)
        if pid_written:
            pidfile.remove(cfg.pidfile)
