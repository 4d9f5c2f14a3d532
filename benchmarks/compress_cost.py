"""CPU cost of rproxy's response compression, per MiB, for each coding.

Encodes a JSON-like body with the fast path's own encoders and parameters
(rproxy._fastpath.compress_buffer: the same cz_encode, a flush every `piece`
bytes as for each downstream read), timed with process CPU time (so a busy
machine inflates it less than wall time), best of `--rounds`.

    python -P benchmarks/compress_cost.py [--mib 8] [--piece 32768] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import random
import time

from rproxy.fastpath import compress_buffer, compress_memory


def body(n: int) -> bytes:
    rnd = random.Random(1)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += json.dumps({"id": i, "name": f"item-{rnd.randrange(10**6)}", "price": rnd.randrange(10**5) / 100,
                           "tags": rnd.sample(["red", "green", "blue", "small", "large", "new"], 2),
                           "ok": rnd.random() < 0.5}).encode() + b",\n"
        i += 1
    return bytes(out[:n])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--piece", type=int, default=32768)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    data = body(a.mib << 20)
    res = {}
    for coding in ("gzip", "br", "zstd"):
        best = None
        for _ in range(a.rounds):
            t = time.process_time()
            out = compress_buffer(coding, data, a.piece)
            dt = time.process_time() - t
            best = dt if best is None or dt < best else best
        res[coding] = {"ms_per_mib": round(best * 1000 / a.mib, 2), "ratio": round(len(data) / len(out), 2)}
    res["memory_bytes"] = compress_memory()
    print(json.dumps({"mib": a.mib, "piece": a.piece, "results": res}, indent=1))


if __name__ == "__main__":
    main()
