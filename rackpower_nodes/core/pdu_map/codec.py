"""Register codecs and request planning for a PDU's Modbus register map. Pure numpy.

`decode_words`/`encode_words` convert between uint16 registers and values of the map's data
types (big-endian words, either word order for 32-bit values); `plan_blocks` merges register
spans into as few requests as the Modbus limits allow.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# numpy big-endian dtype and registers per value
TYPES = {"uint16": (">u2", 1), "int16": (">i2", 1), "uint32": (">u4", 2), "int32": (">i4", 2),
         "float32": (">f4", 2)}
# Modbus application protocol limits per request (registers or bits)
READ_LIMITS = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
WRITE_LIMITS = {"holding": 123, "coil": 1968}


def plan_blocks(spans: Iterable[tuple[int, int]], limit: int,
                readable: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Merge (address, count) spans into as few requests of at most `limit` as possible.

    Spans that touch or overlap merge; spans separated by a gap merge too when the gap lies
    inside one of the `readable` (address, count) ranges (registers known to exist, e.g. the
    other outlets of a densely packed point). Returns sorted (address, count) requests.
    """
    ranges = sorted((a, a + n) for a, n in readable)
    out: list[list[int]] = []
    for start, count in sorted(spans):
        end = start + count
        if out:
            s0, e0 = out[-1]
            gap_ok = start <= e0 or any(a <= e0 and start <= b for a, b in ranges)
            if gap_ok and max(end, e0) - s0 <= limit:
                out[-1][1] = max(end, e0)
                continue
        while end - start > limit:      # one span longer than a request
            out.append([start, start + limit])
            start += limit
        out.append([start, end])
    return [(s, e - s) for s, e in out]


def decode_words(words: np.ndarray, type_: str, word_order: str = "big") -> np.ndarray:
    """(n, width) uint16 registers -> (n,) float64 raw values of `type_`."""
    dtype, width = TYPES[type_]
    words = np.asarray(words, dtype=np.uint16).reshape(-1, width)
    if word_order == "little" and width > 1:
        words = words[:, ::-1]
    return np.frombuffer(np.ascontiguousarray(words, dtype=">u2").tobytes(),
                         dtype=dtype).astype(np.float64)


def encode_words(raw: np.ndarray, type_: str, word_order: str = "big") -> np.ndarray:
    """(n,) raw values -> (n, width) uint16 registers; ValueError when a value does not fit."""
    dtype, width = TYPES[type_]
    raw = np.atleast_1d(np.asarray(raw, dtype=np.float64))
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"values {raw.tolist()}: expected finite numbers")
    if type_ == "float32":
        lo, hi = -float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)
        cast = raw
    else:
        info = np.iinfo(np.dtype(dtype))
        lo, hi = info.min, info.max
        cast = np.rint(raw)
    bad = raw[(cast < lo) | (cast > hi)]
    if bad.size:
        raise ValueError(f"raw value {float(bad[0])!r} outside {type_} range {lo}..{hi}")
    words = np.frombuffer(cast.astype(dtype).tobytes(), dtype=">u2").reshape(-1, width)
    if word_order == "little" and width > 1:
        words = words[:, ::-1]
    return words.astype(np.uint16)
