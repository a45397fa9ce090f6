"""Encoded polylines (Google's algorithm), precision 5 or 6.

OSRM's ``polyline`` geometry uses precision 5, ``polyline6`` precision 6; the
coordinate order inside the string is (lat, lon).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from routing_core.polyline import decode_values


def encode(lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray, precision: int = 6) -> str:
    """Encode degrees as a polyline string."""
    lat_a = np.asarray(lat, dtype=np.float64)
    return encode_many(lat_a, np.asarray(lon, dtype=np.float64), np.asarray([lat_a.size]), precision)[0]


def encode_many(lat: np.ndarray, lon: np.ndarray, counts: np.ndarray, precision: int = 6) -> list[str]:
    """Several polylines at once: the first ``counts[0]`` points are the first polyline, and so on.

    One vectorised pass over all the points; a route's legs cost about what one leg costs."""
    factor = 10**precision
    counts = np.asarray(counts, dtype=np.int64)
    lat_i = np.round(np.asarray(lat, dtype=np.float64) * factor).astype(np.int64)
    lon_i = np.round(np.asarray(lon, dtype=np.float64) * factor).astype(np.int64)
    if lat_i.size == 0:
        return [""] * counts.size
    starts = (np.cumsum(counts) - counts)[counts > 0]
    d_lat, d_lon = np.diff(lat_i, prepend=0), np.diff(lon_i, prepend=0)
    d_lat[starts], d_lon[starts] = lat_i[starts], lon_i[starts]  # each polyline starts from 0
    pairs = np.empty(lat_i.size * 2, dtype=np.int64)
    pairs[0::2], pairs[1::2] = d_lat, d_lon
    # Zigzag (sign into the lowest bit), then 5-bit chunks, least significant first; every chunk
    # but a value's last carries the continuation bit 0x20; +63 makes each a printable character.
    value = (pairs << 1) ^ (pairs >> 63)
    n_chunks = np.ones(value.size, dtype=np.int64)
    rest = value >> 5
    while rest.any():
        n_chunks += rest > 0
        rest >>= 5
    k = np.arange(int(n_chunks.max()), dtype=np.int64)
    chunks = (value[:, None] >> (5 * k)[None, :]) & 0x1F
    chunks |= np.where(k[None, :] < (n_chunks - 1)[:, None], 0x20, 0)
    text = (chunks + 63).astype(np.uint8)[k[None, :] < n_chunks[:, None]].tobytes().decode("ascii")
    ends = np.concatenate(([0], np.cumsum(n_chunks)))[2 * np.cumsum(counts)].tolist()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def decode(text: str, precision: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Decode a polyline string into (lat, lon) arrays in degrees.

    Raises ValueError on a truncated or malformed string.
    """
    values = decode_values(text)
    arr = np.cumsum(np.asarray(values, dtype=np.int64).reshape(-1, 2), axis=0) / float(10**precision)
    return arr[:, 0].copy(), arr[:, 1].copy()
