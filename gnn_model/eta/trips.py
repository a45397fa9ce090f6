"""Recorded taxi trips as arrays: where and when a trip started and ended, and how long it took.

Formats (plain or gzipped CSV):

* ``nyc-kaggle``: the Kaggle "NYC Taxi Trip Duration" columns, with a header: ``id``,
  ``pickup_datetime``, ``pickup_longitude``, ``pickup_latitude``, ``dropoff_longitude``,
  ``dropoff_latitude``, ``trip_duration`` (seconds) among others.
* ``nyc-taxi``: the NYC TLC / DEBS 2015 rows, no header, 17 columns: pickup time in column 3,
  ``trip_time_in_secs`` in column 5, pickup lon/lat in 7/8, drop-off lon/lat in 9/10.

Times are the city's local clock as recorded (no offset); they stay naive and are read as
local time, which is what time-of-day buckets are about.

Cleaning (``clean_mask``) drops what cannot be an A-to-B drive, before any model sees it and
the same for every method compared: durations under ``MIN_DURATION_S`` or over
``MAX_DURATION_S`` (meters left running), pickup and drop-off closer than ``MIN_STRAIGHT_M``
(round trips or a cancelled ride), and straight-line speeds above ``MAX_STRAIGHT_KPH`` (bad
GPS or clock). It never looks at any prediction.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

FORMATS = ("nyc-kaggle", "nyc-taxi")
MIN_DURATION_S = 60.0
MAX_DURATION_S = 3 * 3600.0
MIN_STRAIGHT_M = 250.0
MAX_STRAIGHT_KPH = 80.0
_EARTH_M = 6_371_008.8


class TripFileError(ValueError):
    """The trip file cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Trips:
    """Trips in flat arrays; ``pickup_at`` is local time (datetime64[s], naive)."""

    trip_id: np.ndarray  # str
    pickup_at: np.ndarray  # datetime64[s]
    pickup_lat: np.ndarray
    pickup_lon: np.ndarray
    dropoff_lat: np.ndarray
    dropoff_lon: np.ndarray
    duration_s: np.ndarray

    def __len__(self) -> int:
        return int(self.duration_s.size)

    def take(self, mask_or_idx: np.ndarray) -> Trips:
        return Trips(*(getattr(self, f)[mask_or_idx] for f in self.__dataclass_fields__))

    def straight_m(self) -> np.ndarray:
        return haversine_m(self.pickup_lat, self.pickup_lon, self.dropoff_lat, self.dropoff_lon)

    def inside(self, bbox: tuple[float, float, float, float]) -> np.ndarray:
        """Both ends inside (min_lat, min_lon, max_lat, max_lon)."""
        la0, lo0, la1, lo1 = bbox
        ok = np.ones(len(self), dtype=bool)
        for lat, lon in ((self.pickup_lat, self.pickup_lon), (self.dropoff_lat, self.dropoff_lon)):
            ok &= (lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
        return ok

    def before(self, when: str) -> np.ndarray:
        return self.pickup_at < np.datetime64(when)


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def clean_mask(trips: Trips) -> np.ndarray:
    """Trips that can be an A-to-B drive (see the module's docstring)."""
    d = trips.duration_s
    straight = trips.straight_m()
    speed_kph = straight / np.maximum(d, 1.0) * 3.6
    return (
        (d >= MIN_DURATION_S) & (d <= MAX_DURATION_S) & (straight >= MIN_STRAIGHT_M) & (speed_kph <= MAX_STRAIGHT_KPH)
    )


def _open_text(path: Path) -> io.TextIOBase:
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")  # type: ignore[return-value]


def read_trips(path: Path, fmt: str) -> Trips:
    """Read a trip file (see the module's docstring); TripFileError names what is wrong."""
    if fmt not in FORMATS:
        raise TripFileError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not path.is_file():
        raise TripFileError(f"trip file not found: {path}")
    ids: list[str] = []
    when: list[str] = []
    cols: list[list[float]] = []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            if fmt == "nyc-kaggle":
                header = next(reader, None)
                if header is None:
                    raise TripFileError(f"{path.name}: empty file")
                need = ("id", "pickup_datetime", "pickup_latitude", "pickup_longitude", "dropoff_latitude",
                        "dropoff_longitude", "trip_duration")  # fmt: skip
                missing = [c for c in need if c not in header]
                if missing:
                    raise TripFileError(f"{path.name}: missing column(s) {', '.join(missing)} for format nyc-kaggle")
                pos = [header.index(c) for c in need]
            else:
                pos = [0, 2, 7, 6, 9, 8, 4]
            for line, row in enumerate(reader, start=2 if fmt == "nyc-kaggle" else 1):
                if not row:
                    continue
                try:
                    vals = [row[p] for p in pos]
                    nums = [float(v) for v in vals[2:]]
                    datetime.fromisoformat(vals[1])
                except (IndexError, ValueError) as exc:
                    raise TripFileError(f"{path.name} line {line}: cannot read the row ({exc})") from None
                ids.append(vals[0])
                when.append(vals[1].replace(" ", "T"))
                cols.append(nums)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise TripFileError(f"{path.name}: cannot read ({exc})") from None
    if not ids:
        raise TripFileError(f"{path.name}: no trips")
    arr = np.asarray(cols, dtype=np.float64)
    return Trips(np.asarray(ids), np.asarray(when, dtype="datetime64[s]"), arr[:, 0], arr[:, 1], arr[:, 2],
                 arr[:, 3], arr[:, 4])  # fmt: skip
