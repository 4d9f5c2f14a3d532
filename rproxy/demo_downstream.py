"""A tiny demo downstream for the quick start: `python -m rproxy.demo_downstream`.

Serves a small page on 127.0.0.1:8081 (HTTP/1.1, keep-alive) so that
`curl http://127.0.0.1:8080/` through rproxy has something to show.  Not for
production: it is the standard library's threaded HTTP server.
"""
from __future__ import annotations

import argparse
import http.server
import sys

PAGE = b"""<!doctype html>
<title>rproxy demo downstream</title>
<h1>Hello from the downstream behind rproxy</h1>
<p>This page was served by rproxy's demo downstream and forwarded by rproxy.</p>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rproxy-demo-downstream"

    def _send(self, body: bytes, status: int = 200, ctype: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._send(PAGE)

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._send(b"received %d bytes\n" % len(body), ctype="text/plain")

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-downstream: " + (fmt % args) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args(argv)
    httpd = http.server.ThreadingHTTPServer((args.addr, args.port), Handler)
    httpd.daemon_threads = True
    print(f"demo downstream on http://{args.addr}:{args.port}/", file=sys.stderr)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
