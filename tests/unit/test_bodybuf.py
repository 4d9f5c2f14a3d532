"""The body buffer (bodybuf.pxi) on its own: memory up to mem_max, then an
unlinked temp file up to file_max, bytes out in the order they came in,
whatever the sizes and however appends and takes interleave."""
from __future__ import annotations

import os
import random

import rproxy.fastpath  # noqa: F401  (loads llhttp's symbols first)
from rproxy._fastpath import testhook_bodybuf as bodybuf_run  # not test*: pytest would try to collect it


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_memory_then_file_in_order(tmp_path):
    a, b = data(10_000, 1), data(50_000, 2)
    out, trace = bodybuf_run(str(tmp_path), 16_384, 1 << 20, [("in", a), ("in", b), ("out", 1 << 30)])
    assert out == a + b
    assert trace[0][1:] == (10_000, 10_000, 0, False)       # all in memory, no file yet
    assert trace[1][1:] == (50_000, 16_384, 43_616, True)   # memory topped up to 16k, the rest in the file
    assert trace[2][2:] == (0, 0, True)                      # drained (the file kept, emptied)
    assert os.listdir(tmp_path) == []                        # never visible: unlinked at creation


def test_at_each_threshold(tmp_path):
    for mem_max, file_max, n in [(4096, 0, 4095), (4096, 0, 4096), (4096, 0, 4097),
                                 (4096, 8192, 4096 + 8191), (4096, 8192, 4096 + 8192), (4096, 8192, 4096 + 8193)]:
        x = data(n, n)
        out, trace = bodybuf_run(str(tmp_path), mem_max, file_max, [("in", x), ("out", 1 << 30)])
        took = min(n, mem_max + file_max)
        assert trace[0][1] == took, (mem_max, file_max, n)
        assert trace[0][4] == (took > mem_max)                # a file only beyond memory
        assert out == x[:took]


def test_random_interleaving_keeps_order(tmp_path):
    rng = random.Random(7)
    sent, ops = bytearray(), []
    for i in range(300):
        if rng.random() < 0.6:
            piece = data(rng.randrange(1, 40_000), i)
            ops.append(("in", piece))
        else:
            ops.append(("out", rng.randrange(1, 60_000)))
    ops.append(("out", 1 << 40))
    out, trace = bodybuf_run(str(tmp_path), 20_000, 300_000, ops)
    for (op, arg), (_, res, mem, pending, _) in zip(ops, trace):
        if op == "in":
            sent += arg[:res]
        assert mem <= 20_000 and pending <= 300_000
    assert out == bytes(sent)
