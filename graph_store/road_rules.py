"""Which OSM ways a car may use, in which direction, and how fast.

The rules follow the usual car profile of open routers: motor-vehicle ``highway``
classes only, access restrictions honoured, ``oneway`` as direction, speeds from
``maxspeed`` when it parses, else a per-class default (km/h).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum

# Default free-flow speeds in km/h per road class, used when ``maxspeed`` is absent
# or unparseable. Urban values: the maps we ship and test on are city extracts.
DEFAULT_SPEED_KPH: dict[str, float] = {
    "motorway": 90.0,
    "motorway_link": 45.0,
    "trunk": 70.0,
    "trunk_link": 40.0,
    "primary": 50.0,
    "primary_link": 30.0,
    "secondary": 45.0,
    "secondary_link": 30.0,
    "tertiary": 40.0,
    "tertiary_link": 25.0,
    "unclassified": 30.0,
    "residential": 25.0,
    "living_street": 10.0,
    "service": 15.0,
}

ROAD_CLASSES: tuple[str, ...] = tuple(DEFAULT_SPEED_KPH)

# Emergency-only service roads are closed to us. Parking aisles, driveways and alleys
# stay in (delivery addresses are often on them) but at half speed, so routes do not
# cut through parking lots, as in OSRM's car profile.
_EXCLUDED_SERVICE = {"emergency_access"}
_SLOW_SERVICE = {"parking_aisle", "parking", "driveway", "drive-through", "alley"}
_SLOW_SERVICE_FACTOR = 0.5
# access=delivery stays open: delivering is what this service plans.
_NO_ACCESS = {"no", "private", "agricultural", "forestry", "emergency", "psv"}
_MPH = 1.609344
_KNOTS = 1.852


class Direction(IntEnum):
    """Allowed travel direction along the way's node order."""

    BOTH = 0
    FORWARD = 1
    BACKWARD = 2


def is_drivable(tags: Mapping[str, str]) -> bool:
    """True when a motor vehicle may drive on a way with these tags."""
    highway = tags.get("highway")
    if highway not in DEFAULT_SPEED_KPH:
        return False
    if tags.get("area") == "yes":
        return False
    if highway == "service" and tags.get("service") in _EXCLUDED_SERVICE:
        return False
    for key in ("motor_vehicle", "motorcar", "vehicle", "access"):
        value = tags.get(key)
        if value is not None:
            # The most specific key that is set decides.
            return value not in _NO_ACCESS
    return True


def direction(tags: Mapping[str, str]) -> Direction:
    """Travel direction from ``oneway``, roundabouts and motorways."""
    oneway = tags.get("oneway", "").strip().lower()
    if oneway in ("-1", "reverse"):
        return Direction.BACKWARD
    if oneway in ("yes", "true", "1"):
        return Direction.FORWARD
    if oneway == "no":
        return Direction.BOTH
    if tags.get("junction") in ("roundabout", "circular"):
        return Direction.FORWARD
    if tags.get("highway") in ("motorway", "motorway_link"):
        return Direction.FORWARD
    return Direction.BOTH


_SPEED_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(km/h|kmh|kph|mph|knots)?\s*$")
_ZONE_SPEEDS = {"urban": 50.0, "rural": 80.0, "motorway": 110.0, "living_street": 10.0, "walk": 7.0}


def parse_maxspeed(value: str | None) -> float | None:
    """``maxspeed`` in km/h, or None when absent or unparseable.

    Accepts ``50``, ``30 mph``, ``FI:urban`` style zone values, and lists such as
    ``50;30`` (the lowest wins, the cautious reading).
    """
    if not value:
        return None
    speeds = []
    for part in value.split(";"):
        part = part.strip().lower()
        match = _SPEED_RE.match(part)
        if match:
            speed = float(match.group(1))
            unit = match.group(2)
            if unit == "mph":
                speed *= _MPH
            elif unit == "knots":
                speed *= _KNOTS
            if speed > 0:
                speeds.append(speed)
        elif ":" in part:
            zone = part.split(":", 1)[1]
            if zone in _ZONE_SPEEDS:
                speeds.append(_ZONE_SPEEDS[zone])
    return min(speeds) if speeds else None


def speed_kph(tags: Mapping[str, str]) -> float:
    """Free-flow speed in km/h: ``maxspeed`` if it parses, else the class default.

    Parking aisles, driveways and alleys run at half that. The result is clamped to
    5..130 km/h.
    """
    highway = tags.get("highway", "unclassified")
    parsed = parse_maxspeed(tags.get("maxspeed"))
    speed = parsed if parsed is not None else DEFAULT_SPEED_KPH.get(highway, 30.0)
    if highway == "service" and tags.get("service") in _SLOW_SERVICE:
        speed *= _SLOW_SERVICE_FACTOR
    return max(5.0, min(speed, 130.0))
