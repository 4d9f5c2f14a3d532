"""Run a command the way a systemd unit would, on a machine where systemd is
not running (CI, containers): the packaging tests start the installed rproxy
with the unit's own command lines and its process settings, read from the
installed unit file rather than restated here.

Emulated: ExecStartPre / ExecStart / ExecReload command lines ($MAINPID
substituted), the environment (systemd gives a service a bare PATH and no
inherited variables), WorkingDirectory=/, UMask=, LimitNOFILE=,
NoNewPrivileges=, CapabilityBoundingSet= (with setpriv(1)), RuntimeDirectory=
and RuntimeDirectoryMode=, KillSignal=.
Not emulated: the mount namespace (ProtectSystem=, ProtectHome=,
PrivateTmp=, ReadWritePaths=), seccomp (SystemCallFilter=,
RestrictAddressFamilies=) and the cgroup; `systemd-analyze verify` and
`systemd-analyze security --offline` check those settings statically.
"""
from __future__ import annotations

import os
import resource
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Unit:
    path: str
    service: dict = field(default_factory=dict)      # key -> [values], in file order

    @classmethod
    def load(cls, path: str) -> "Unit":
        unit = cls(path)
        section = None
        with open(path, encoding="utf-8") as f:
            for raw in f:
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1]
                    continue
                if section != "Service" or "=" not in line:
                    continue
                key, value = (s.strip() for s in line.split("=", 1))
                unit.service.setdefault(key, []).append(value)
        return unit

    def one(self, key: str, default=None):
        vals = self.service.get(key)
        return vals[-1] if vals else default

    def commands(self, key: str, mainpid: int | None = None) -> list[list[str]]:
        out = []
        for v in self.service.get(key, []):
            # "-" (failure ignored), "+" / "!" prefixes are not used by rproxy's unit
            assert v[:1] not in "-+!@:", f"{key}={v}: prefix not emulated"
            if mainpid is not None:
                v = v.replace("$MAINPID", str(mainpid))
            out.append(shlex.split(v))
        return out

    # ---- the process settings -------------------------------------------------------

    def _setpriv_prefix(self) -> list[str]:
        prefix = ["setpriv"]
        if (self.one("NoNewPrivileges", "no")).lower() in ("yes", "true", "1", "on"):
            prefix.append("--no-new-privs")
        caps = self.one("CapabilityBoundingSet")
        if caps is not None:
            names = [c.lower().removeprefix("cap_") for c in caps.split()]
            prefix.append("--bounding-set=-all" + "".join(f",+{n}" for n in names))
        return prefix if len(prefix) > 1 else []

    def _preexec(self):
        umask = int(self.one("UMask", "0022"), 8)
        nofile = self.one("LimitNOFILE")

        def setup():
            os.umask(umask)
            if nofile:
                want = int(nofile)
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                # a container may forbid raising the hard limit even to root:
                # then the closest this machine allows
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                except (ValueError, OSError):
                    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        return setup

    def wrap(self, argv: list[str]) -> list[str]:
        return self._setpriv_prefix() + argv

    def prepare_runtime_directory(self) -> str | None:
        name = self.one("RuntimeDirectory")
        if not name:
            return None
        path = os.path.join("/run", name)
        shutil.rmtree(path, ignore_errors=True)
        os.mkdir(path)
        os.chmod(path, int(self.one("RuntimeDirectoryMode", "0755"), 8))   # root-owned, as systemd makes it
        return path

    def remove_runtime_directory(self) -> None:
        name = self.one("RuntimeDirectory")
        if name:
            shutil.rmtree(os.path.join("/run", name), ignore_errors=True)

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(argv), env={"PATH": SYSTEMD_PATH}, cwd="/",
                              preexec_fn=self._preexec(), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, argv: list[str], log) -> subprocess.Popen:
        return subprocess.Popen(self.wrap(argv), env={"PATH": SYSTEMD_PATH}, cwd="/",
                                preexec_fn=self._preexec(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def kill_signal(self) -> int:
        name = self.one("KillSignal", "SIGTERM")
        return getattr(signal, name if name.startswith("SIG") else "SIG" + name)

    def stop_timeout(self) -> float:
        v = self.one("TimeoutStopSec", "90s")
        return float(v[:-1]) if v.endswith("s") else float(v)
