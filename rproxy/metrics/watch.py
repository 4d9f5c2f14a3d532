"""reload-on-change: inotify on the configuration's files, in the master.

The master's poll loop watches one inotify descriptor (libc's
inotify_init1/inotify_add_watch through ctypes; no thread).  Watches are on
the *directories* holding the files -- the main config file, every file it
included, every certificate, key, CA and CRL file -- because editors and
certificate renewers replace files by rename, which a watch on the old
inode would never report.  An event for a watched name (or any name in a
watched include directory, so a new conf.d/*.conf counts) arms a debounce
timer; DEBOUNCE seconds after the last event the master reloads, through the
same validate-then-swap path as SIGHUP.
"""
from __future__ import annotations

import os
import struct
from typing import Optional

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB
DEBOUNCE = 0.5

_libc = None


def _lib():
    global _libc
    if _libc is None:
        # ctypes on first use only: a master without reload-on-change never
        # pays for it (ctypes.util alone pulls in subprocess)
        import ctypes

        try:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            import ctypes.util

            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return _libc


def config_files(cfg) -> set:
    """Every file a reload would read: the config, its includes, TLS files."""
    from ..config.errors import _SOURCES

    files = {os.path.abspath(cfg.path)}
    files.update(os.path.abspath(p) for p in _SOURCES if not p.startswith("<"))
    for srv in cfg.servers:
        ssls = [srv.ssl] + [vh.ssl for vh in srv.vhosts] + [ds.ssl for ds in srv.downstreams]
        for ssl in ssls:
            if ssl is None:
                continue
            for p in (ssl.cert, ssl.key, ssl.ca, ssl.crl.file if ssl.crl else None):
                if p:
                    files.add(os.path.abspath(p))
    return files


class Watcher:
    def __init__(self):
        self.fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            import ctypes

            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.dirs: dict[int, str] = {}          # watch descriptor -> directory
        self.names: set = set()                 # (dir, basename) that matter
        self.include_dirs: set = set()          # any name in these matters (*.conf)
        self.due: Optional[float] = None
        self.changed: set = set()

    def watch(self, cfg) -> None:
        files = config_files(cfg)
        self.names = {(os.path.dirname(f), os.path.basename(f)) for f in files}
        conf_dir = os.path.dirname(os.path.abspath(cfg.path))
        self.include_dirs = {os.path.dirname(f) for f in files if f.endswith(".conf")} - {conf_dir}
        wanted = {d for d, _ in self.names}
        have = {d: wd for wd, d in self.dirs.items()}
        for d in wanted - set(have):
            wd = _lib().inotify_add_watch(self.fd, os.fsencode(d), MASK)
            if wd >= 0:
                self.dirs[wd] = d
        for d in set(have) - wanted:
            _lib().inotify_rm_watch(self.fd, have[d])
            self.dirs.pop(have[d], None)

    def read(self, now: float) -> None:
        """Drain the events; arm the debounce timer when one matters."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                return
            off = 0
            while off + 16 <= len(data):
                wd, mask, _cookie, ln = struct.unpack_from("iIII", data, off)
                name = data[off + 16:off + 16 + ln].split(b"\0", 1)[0].decode(errors="replace")
                off += 16 + ln
                d = self.dirs.get(wd)
                if mask & IN_Q_OVERFLOW or (d is not None and (
                        (d, name) in self.names or (d in self.include_dirs and name.endswith(".conf")))):
                    self.changed.add(os.path.join(d, name) if d else "(many files)")
                    self.due = now + DEBOUNCE

    def take(self, now: float) -> Optional[list]:
        """The changed files, once the debounce delay has passed."""
        if self.due is None or now < self.due:
            return None
        self.due = None
        changed, self.changed = sorted(self.changed), set()
        return changed

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
