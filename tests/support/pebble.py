"""A real ACME server for the tests: Debian's `pebble` on 127.0.0.1.

pebble-challtestsrv is its DNS (every name resolves to 127.0.0.1; its own
challenge servers are off), pebble validates against the ports the proxy
listens on (httpPort / tlsPort), PEBBLE_VA_NOSLEEP removes the validation
delay.  pebble's own listener gets a certificate from a throwaway CA made
with support/certs.py (openssl); rproxy trusts it through `acme { ca }`.
The roots pebble issues under are new at every pebble start: fetch them
with roots() from the management port.
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

from support.certs import Pki
from support.proc import free_port, wait_port


def available() -> bool:
    return bool(shutil.which("pebble") and shutil.which("pebble-challtestsrv"))


class Pebble:
    def __init__(self, root, http_port: int, tls_port: int, env=None):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        pki = Pki(os.path.join(self.root, "pki"))
        ca = pki.ca("pebble-ca", "/O=rproxy tests/CN=pebble listener CA")
        leaf = pki.server("pebble", ca, dns=("localhost",), ips=("127.0.0.1",))
        self.ca_file = ca.crt
        self.port = free_port()
        self.mgmt = free_port()
        self.dns_port = free_port()
        self.chall_mgmt = free_port()
        self.http_port, self.tls_port = http_port, tls_port
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.config = os.path.join(self.root, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                                  "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                                  "certificate": leaf.crt, "privateKey": leaf.key,
                                  "httpPort": http_port, "tlsPort": tls_port,
                                  "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
        self.env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="0", PEBBLE_AUTHZREUSE="0",
                        **(env or {}))   # AUTHZREUSE: every order validates (pebble reuses half by default)
        self.log_path = os.path.join(self.root, "pebble.log")
        self.dns = None
        self.proc = None

    def start(self, env=None) -> "Pebble":
        if self.dns is None:
            self.dns = subprocess.Popen(
                ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", f"127.0.0.1:{self.chall_mgmt}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["pebble", "-config", self.config, "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                                     stdout=log, stderr=subprocess.STDOUT, env=dict(self.env, **(env or {})),
                                     cwd=self.root)
        log.close()
        try:
            wait_port(self.port)
            wait_port(self.mgmt)
        except TimeoutError:
            raise RuntimeError(f"pebble did not start:\n{self.read_log()}") from None
        return self

    def stop_ca(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.stop_ca()
        if self.dns is not None and self.dns.poll() is None:
            self.dns.terminate()
            try:
                self.dns.wait(5)
            except subprocess.TimeoutExpired:
                self.dns.kill()
                self.dns.wait()
        self.dns = None

    def roots(self) -> str:
        """The PEM of the root pebble issues under (management port)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt}/roots/0", context=ctx, timeout=10) as r:
            return r.read().decode()

    def read_log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2, detail=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{detail()}" if detail else ""))
        time.sleep(interval)
