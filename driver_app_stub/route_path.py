"""A leg's road path as a simulated driver sees it: decoded polyline6, lengths, bearings.

Units: degrees (lat, lon, bearings clockwise from north), metres. The app gets geometry only
as encoded polylines in route answers, so it decodes them itself (it imports no server code).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from routing_core.polyline import decode_values

EARTH_RADIUS_M = 6_371_008.8


def decode_polyline(text: str, precision: int = 6) -> list[tuple[float, float]]:
    """(lat, lon) points of an encoded polyline (Google's algorithm; OSRM's polyline6 is precision 6).

    Raises ValueError on a malformed or truncated string."""
    values = decode_values(text)
    scale = float(10**precision)
    points: list[tuple[float, float]] = []
    lat = lon = 0
    for k in range(0, len(values), 2):
        lat += values[k]
        lon += values[k + 1]
        points.append((lat / scale, lon / scale))
    return points


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial compass bearing from point 1 to point 2, in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass(frozen=True)
class PathPosition:
    lat: float
    lon: float
    segment: int  # index of the segment (points[segment] -> points[segment + 1]) the position is on
    heading_deg: float


class RoutePath:
    """A polyline with cumulative lengths; positions are addressed by metres from its start.

    Repeated points (zero-length segments) are dropped; a path of one point has length 0."""

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points:
            raise ValueError("a path needs at least one point")
        kept = [points[0]]
        for p in points[1:]:
            if haversine_m(*kept[-1], *p) > 0.01:
                kept.append(p)
        self.points: list[tuple[float, float]] = kept
        self.cumulative: list[float] = [0.0]
        for a, b in pairwise(kept):
            self.cumulative.append(self.cumulative[-1] + haversine_m(*a, *b))

    @property
    def length_m(self) -> float:
        return self.cumulative[-1]

    @property
    def segments(self) -> int:
        return len(self.points) - 1

    def segment_key(self, i: int) -> tuple[int, int, int, int]:
        """An identity of segment ``i`` that any driver on the same piece of road computes alike
        (its end points rounded to ~1 m)."""
        (a_lat, a_lon), (b_lat, b_lon) = self.points[i], self.points[i + 1]
        return (round(a_lat * 1e5), round(a_lon * 1e5), round(b_lat * 1e5), round(b_lon * 1e5))

    def segment_at(self, distance_m: float) -> int:
        """The segment holding the point ``distance_m`` along (the last one at the very end)."""
        if self.segments == 0:
            return 0
        i = bisect.bisect_right(self.cumulative, distance_m) - 1
        return min(max(i, 0), self.segments - 1)

    def position(self, distance_m: float) -> PathPosition:
        """The point ``distance_m`` along the path (clamped to its ends) and the heading there."""
        if self.segments == 0:
            lat, lon = self.points[0]
            return PathPosition(lat, lon, 0, 0.0)
        d = min(max(distance_m, 0.0), self.length_m)
        i = self.segment_at(d)
        (a_lat, a_lon), (b_lat, b_lon) = self.points[i], self.points[i + 1]
        seg = self.cumulative[i + 1] - self.cumulative[i]
        t = (d - self.cumulative[i]) / seg if seg > 0 else 0.0
        return PathPosition(a_lat + t * (b_lat - a_lat), a_lon + t * (b_lon - a_lon), i,
                            bearing_deg(a_lat, a_lon, b_lat, b_lon))  # fmt: skip
