"""Resource limits and the privilege drop.

The master does everything that needs root first (rlimits, binding ports
below 1024, reading key files), then becomes `user`/`group` for good: real,
effective and saved ids all change and the supplementary groups are those of
the user, so root cannot be regained.  Workers are forked after the drop and
never had root.  The price: a reload cannot do anything that needs root
(README, "Process model and signals").
"""
from __future__ import annotations

import grp
import os
import pwd
import resource
from dataclasses import dataclass, replace
from typing import Iterator, Optional

from .. import errorlog
from ..config.model import SSL, Config
from . import StartupError


# ---- resource limits ----------------------------------------------------------------

def _nr_open() -> Optional[int]:
    """The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open), if readable."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def set_max_nofile(wanted: int) -> None:
    """RLIMIT_NOFILE := `wanted` (soft, and hard when the hard limit is lower).

    Never settles for another value: when the hard limit cannot be raised
    (no CAP_SYS_RESOURCE, or above fs.nr_open) this raises StartupError."""
    if wanted <= 0:
        return                      # max-nofile = 0: leave the inherited limit alone
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError) as e:
        # Python reports EPERM from setrlimit as ValueError
        nr_open = _nr_open()
        if nr_open is not None and wanted > nr_open:
            why = (f"the kernel allows at most {nr_open} (fs.nr_open); "
                   "lower max-nofile or raise fs.nr_open with sysctl")
        elif new_hard != hard:
            why = (f"the hard limit is {hard} and this process may not raise it "
                   "(that needs root / CAP_SYS_RESOURCE); raise it where rproxy is started "
                   "(`ulimit -Hn`, LimitNOFILE= in systemd, limits.conf) or lower max-nofile")
        else:
            why = str(e)
        raise StartupError(f"max-nofile = {wanted}: cannot set the open files limit: {why}") from None
    got = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if got != wanted:               # paranoia: "never silently another value"
        raise StartupError(f"max-nofile = {wanted}: the kernel set {got} instead")


def raise_core_limit() -> None:
    """Soft RLIMIT_CORE := hard, so that a crash of the compiled core can leave
    a core file where the administrator's hard limit and fs.suid_dumpable
    allow one (processes that dropped privileges are not dumpable unless
    fs.suid_dumpable says so)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
        except (ValueError, OSError) as e:
            errorlog.warn(f"cannot raise the core file size limit to {hard}: {e}")


# ---- user and group -------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """Who the master becomes: names for messages and initgroups, numeric ids."""
    user: Optional[str]          # None: only the group changes
    uid: Optional[int]
    group: str
    gid: int

    def __str__(self) -> str:
        return f"{self.user}:{self.group}" if self.user else f"group {self.group}"


def resolve_identity(user: Optional[str], group: Optional[str]) -> Optional[Identity]:
    """Look `user`/`group` up now, while start-up errors still reach the
    terminal; None when there is nothing to change.

    Without `group` the user's primary group is used.  When rproxy is not
    started as root there is nothing it could switch to: a different user is
    reported and ignored (as nginx does), the same user is a no-op."""
    if not user and not group:
        return None
    pw = None
    if user:
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise StartupError(f"user = {user}: no such user") from None
    if group:
        try:
            gr = grp.getgrnam(group) if not group.isdigit() else grp.getgrgid(int(group))
        except KeyError:
            raise StartupError(f"group = {group}: no such group") from None
        gid, group_name = gr.gr_gid, gr.gr_name
    else:
        gid = pw.pw_gid
        try:
            group_name = grp.getgrgid(gid).gr_name
        except KeyError:
            group_name = str(gid)
    ident = Identity(pw.pw_name if pw else None, pw.pw_uid if pw else None, group_name, gid)
    if os.geteuid() != 0:
        if ident.uid in (None, os.geteuid()) and gid == os.getegid():
            return None
        errorlog.warn(f"user/group = {ident}: ignored, rproxy is not started as root "
                      f"(it keeps running as uid {os.geteuid()})")
        return None
    return ident


def drop(ident: Identity) -> None:
    """setgid, initgroups, setuid: real, effective and saved ids, then check."""
    try:
        os.setresgid(ident.gid, ident.gid, ident.gid)
        if ident.user:
            # supplementary groups: the user's own (and `group`), none of root's
            os.initgroups(ident.user, ident.gid)
            os.setresuid(ident.uid, ident.uid, ident.uid)
        else:
            os.setgroups([ident.gid])
    except OSError as e:
        raise StartupError(f"cannot switch to {ident}: {e.strerror or e}") from None
    if os.getresgid() != (ident.gid,) * 3:
        raise StartupError(f"group ids are {os.getresgid()} after switching to {ident}")
    if ident.user:
        if os.getresuid() != (ident.uid,) * 3:
            raise StartupError(f"user ids are {os.getresuid()} after switching to {ident}")
        if ident.uid != 0 and _can_regain_root():
            raise StartupError(f"switched to {ident} but root can still be regained; refusing to run")
    errorlog.info(f"running as {ident} (uid {os.getuid()}, gid {os.getgid()}, "
                  f"groups {sorted(os.getgroups())})")


def _can_regain_root() -> bool:
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        return False
    return True


# ---- what a reload will need to read ----------------------------------------------------

def _ssl_blocks(cfg: Config) -> Iterator[tuple[str, SSL]]:
    for srv in cfg.servers:
        if srv.ssl is not None:
            yield f"server {srv.label}", srv.ssl
        for vh in srv.vhosts:
            if vh.ssl is not None:
                yield f"vhost {vh.name} of server {srv.label}", vh.ssl
        for ds in srv.downstreams:
            if ds.ssl is not None:
                # in force with tls = true even when the block says nothing of `enabled`
                yield f"downstream {ds.name}", ds.ssl if not ds.tls else replace(ds.ssl, enabled=True)


def unreadable_files(cfg: Config) -> list[str]:
    """Files a worker generation built from `cfg` reads, that this process
    (the master, after the drop) cannot read: one message per file.

    Key material is read by the master; once it runs as `user`, a reload
    can only use files that user may read."""
    problems = []
    for where, ssl in _ssl_blocks(cfg):
        if not ssl.enabled:
            continue
        for what, path in (("certificate", ssl.cert), ("key", ssl.key), ("CA file", ssl.ca),
                           ("CRL file", ssl.crl.file if ssl.crl else None)):
            if path:
                problem = _cannot_read(path)
                if problem:
                    problems.append(f"TLS {what} {path} ({where}): {problem}")
    # Log files are not listed: they are handed to the dropped user at
    # start-up (master/logfiles.py), and a reload opens the ones it adds
    # itself, failing with the reason when it cannot.
    return problems


def _cannot_read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return e.strerror or str(e)
    return None


def warn_about_reload_limits(cfg: Config) -> None:
    """After the drop: say now what a later reload will not be able to read."""
    if os.geteuid() == 0:
        return
    who = pwd_name(os.geteuid())
    problem = _cannot_read(cfg.path)
    if problem:
        errorlog.warn(f"reloads will fail: the master now runs as {who} and cannot read "
                      f"{cfg.path} ({problem})")
    for p in unreadable_files(cfg):
        errorlog.warn(f"reloads will fail: the master now runs as {who}: {p}")


def pwd_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
