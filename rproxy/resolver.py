"""Re-resolving hostname downstreams in a worker (a thread, off the loop).
Imported only by a worker that has hostname downstreams."""
from __future__ import annotations

import os
import threading

from . import errorlog
from .worker import sockaddr_for


class Resolver(threading.Thread):
    """Re-resolves hostname downstreams in the worker, off the loop: every
    `interval` seconds, and at once when the loop reports a failed connect.
    New addresses go to the loop through its control pipe (used by the next
    connects); the loop itself never blocks on DNS."""

    def __init__(self, w, names, interval: float = 30.0):
        super().__init__(name="rproxy-resolver", daemon=True)
        self.w = w
        self.names = names
        self.interval = interval
        self.control_fd, self.request_fd = w.control_pipe()

    def run(self) -> None:
        import select

        last = {}
        while True:
            ready, _, _ = select.select([self.request_fd], [], [], self.interval)
            if ready:
                try:
                    os.read(self.request_fd, 4096)      # drain: one pass serves them all
                except BlockingIOError:
                    pass
            for i, ds in self.names:
                try:
                    family, raw, _ = sockaddr_for(ds)
                except OSError as e:
                    errorlog.warn(f"downstream {ds.name}: cannot resolve {ds.addr}: {e}")
                    continue
                if last.get(i) != raw:
                    last[i] = raw
                    try:
                        os.write(self.control_fd, self.w.address_record(i, family, raw))
                    except OSError:
                        return
