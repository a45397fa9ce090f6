"""Encoded polylines (Google's algorithm), precision 5 or 6.

OSRM's ``polyline`` geometry uses precision 5, ``polyline6`` precision 6; the
coordinate order inside the string is (lat, lon).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode(lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray, precision: int = 6) -> str:
    """Encode degrees as a polyline string."""
    factor = 10**precision
    lat_i = np.round(np.asarray(lat, dtype=np.float64) * factor).astype(np.int64)
    lon_i = np.round(np.asarray(lon, dtype=np.float64) * factor).astype(np.int64)
    if lat_i.size == 0:
        return ""
    pairs = np.empty(lat_i.size * 2, dtype=np.int64)
    pairs[0::2] = np.diff(lat_i, prepend=0)
    pairs[1::2] = np.diff(lon_i, prepend=0)
    out: list[str] = []
    append = out.append
    for value in pairs.tolist():
        value = ~(value << 1) if value < 0 else value << 1
        while value >= 0x20:
            append(chr((0x20 | (value & 0x1F)) + 63))
            value >>= 5
        append(chr(value + 63))
    return "".join(out)


def decode(text: str, precision: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Decode a polyline string into (lat, lon) arrays in degrees.

    Raises ValueError on a truncated or malformed string.
    """
    values: list[int] = []
    shift = result = 0
    for char in text:
        byte = ord(char) - 63
        if byte < 0 or byte > 0x3F:
            raise ValueError(f"invalid polyline character {char!r}")
        result |= (byte & 0x1F) << shift
        shift += 5
        if byte < 0x20:
            values.append(~(result >> 1) if result & 1 else result >> 1)
            shift = result = 0
    if shift or len(values) % 2:
        raise ValueError("truncated polyline")
    arr = np.cumsum(np.asarray(values, dtype=np.int64).reshape(-1, 2), axis=0) / float(10**precision)
    return arr[:, 0].copy(), arr[:, 1].copy()
