"""Decoding what rproxy compressed, for byte-for-byte checks."""
from __future__ import annotations

import zlib

import brotli
import zstandard


def decode(coding, data):
    """data decoded from `coding` (gzip, br, zstd; None: as it is)."""
    if coding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert coding is None
    return data
