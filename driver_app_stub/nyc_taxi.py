"""NYC yellow-taxi trips (DEBS 2015 sample of the TLC records) as route requests on the active map.

Input: the DEBS 2015 CSV, no header, 17 columns (see ``COLUMNS``); times are New York local time.

Which trips are kept ("on the map"): both the pickup and the drop-off lie inside the active
map's bounding box (the service's ``/readyz`` reports it, or ``--map-bbox``) *and* the service
snaps both to a road (``GET /nearest/v1/driving/lon,lat`` answers ``Ok``, within the service's
snapping limit or a tighter ``snap_radius_m``). The service decides, so the filter agrees with
what ``POST /v1/routes`` would accept. Rows with 0.0 or garbage coordinates fall out here.

Which request each kept trip becomes, at its pickup time: start at the pickup point, visit the
trip's own drop-off and the next ``k`` drop-offs "close by", end open (a taxi drives on). Close
by: drop-offs of other kept trips whose drop-off time lies from this trip's drop-off time up to
``window_min`` minutes later and whose drop-off point lies within ``radius_km`` (great-circle)
of this trip's drop-off, taken in drop-off time order. A request has fewer stops when fewer
such drop-offs exist. ``depart_at`` is the pickup time; ``driver_id`` is ``taxi-`` and the first
12 hex digits of the (already anonymised) medallion.

The sample records whole minutes: unless ``spread_minutes`` is off, trips that share a pickup
minute are spread evenly over that minute in file order, so a replay does not send each
minute's requests in one burst. Times with seconds are kept as they are.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np

from driver_app_stub.replay import ReplayError, ReplayRecord

COLUMNS = (
    "medallion", "hack_license", "pickup_datetime", "dropoff_datetime", "trip_time_in_secs", "trip_distance",
    "pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude", "payment_type", "fare_amount",
    "surcharge", "mta_tax", "tip_amount", "tolls_amount", "total_amount",
)  # fmt: skip
NEW_YORK = ZoneInfo("America/New_York")
EARTH_RADIUS_KM = 6371.0088
NEAREST_CONCURRENCY = 8


@dataclass(frozen=True)
class TaxiTrip:
    """One CSV row: ``line`` (1-based), the medallion, local times, points (degrees)."""

    line: int
    medallion: str
    pickup_at: datetime
    dropoff_at: datetime
    pickup: tuple[float, float]  # (lat, lon)
    dropoff: tuple[float, float]


@dataclass(frozen=True)
class BBox:
    """(min_lat, min_lon, max_lat, max_lon), degrees."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float

    def contains(self, point: tuple[float, float]) -> bool:
        lat, lon = point
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon

    @classmethod
    def parse(cls, text: str) -> BBox:
        try:
            values = [float(x) for x in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ReplayError(f"--map-bbox must be four numbers min_lat,min_lon,max_lat,max_lon, got {text!r}")
        box = cls(*values)
        if not (-90 <= box.min_lat < box.max_lat <= 90 and -180 <= box.min_lon < box.max_lon <= 180):
            raise ReplayError(f"--map-bbox must have min < max within lat -90..90 and lon -180..180, got {text!r}")
        return box


@dataclass(frozen=True)
class TripPlan:
    """How trips become requests (see the module docstring). Validated on creation."""

    k: int = 9
    radius_km: float = 1.0
    window_min: float = 15.0
    spread_minutes: bool = True
    time_budget_ms: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 198:  # the service's default max_stops is 200; the own drop-off is one more
            raise ReplayError(f"--k must be in 0..198, got {self.k}")
        if not self.radius_km > 0:
            raise ReplayError(f"--radius-km must be positive, got {self.radius_km}")
        if not self.window_min >= 0:
            raise ReplayError(f"--window-min must be >= 0, got {self.window_min}")
        if self.time_budget_ms is not None and not 1 <= self.time_budget_ms <= 10_000:
            raise ReplayError(f"--time-budget-ms must be in 1..10000, got {self.time_budget_ms}")


# -- reading ---------------------------------------------------------------------------------------


def _time(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=NEW_YORK)
    except ValueError:
        raise ReplayError(f"{where}: not a time of the form YYYY-MM-DD HH:MM:SS: {text[:40]!r}") from None


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ReplayError(f"{where}: not a number: {text[:40]!r}") from None


def read_trips(path: Path) -> list[TaxiTrip]:
    """Every row of the CSV; a malformed row (column count, time, number) is an error naming line and column."""
    col = {name: i for i, name in enumerate(COLUMNS)}
    trips = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                where = f"{path}:{n}"
                if len(row) != len(COLUMNS):
                    raise ReplayError(f"{where}: expected {len(COLUMNS)} columns ({', '.join(COLUMNS[:4])}, ...), "
                                      f"got {len(row)}")  # fmt: skip

                def num(name: str, row: list[str] = row, where: str = where) -> float:
                    return _number(row[col[name]], f"{where}: column {name}")

                medallion = row[col["medallion"]].strip()
                if not medallion:
                    raise ReplayError(f"{where}: column medallion is empty")
                trips.append(TaxiTrip(
                    n, medallion,
                    _time(row[col["pickup_datetime"]], f"{where}: column pickup_datetime"),
                    _time(row[col["dropoff_datetime"]], f"{where}: column dropoff_datetime"),
                    (num("pickup_latitude"), num("pickup_longitude")),
                    (num("dropoff_latitude"), num("dropoff_longitude")),
                ))  # fmt: skip
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a CSV file ({exc})") from None
    if not trips:
        raise ReplayError(f"{path}: no trips in the file")
    return trips


# -- the map filter ---------------------------------------------------------------------------------


async def map_bbox(client: httpx.AsyncClient) -> BBox | None:
    """The active map's bounding box from ``/readyz`` (``checks.map.bbox``); None when not reported."""
    try:
        r = await client.get("/readyz")
    except httpx.HTTPError as exc:
        raise ReplayError(f"cannot reach the service at {client.base_url}: {exc}") from None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        bbox = r.json()["checks"]["map"]["bbox"]
        return BBox(*(float(v) for v in bbox))
    return None


async def snaps_to_road(client: httpx.AsyncClient, points: Sequence[tuple[float, float]],
                        radius_m: float | None = None) -> dict[tuple[float, float], bool]:  # fmt: skip
    """Whether the service snaps each (lat, lon) to a road (OSRM ``nearest``); retries after a 429."""
    out: dict[tuple[float, float], bool] = {}
    todo = list(dict.fromkeys(points))
    query = {} if radius_m is None else {"radiuses": f"{radius_m:g}"}

    async def one(point: tuple[float, float]) -> None:
        lat, lon = point
        for _attempt in range(20):
            try:
                r = await client.get(f"/nearest/v1/driving/{lon:.6f},{lat:.6f}", params=query)
            except httpx.HTTPError as exc:
                raise ReplayError(f"cannot reach the service at {client.base_url}: {exc}") from None
            if r.status_code == 429:
                await asyncio.sleep(float(r.headers.get("retry-after", "1") or 1))
                continue
            break
        try:
            data = r.json()
        except ValueError:
            data = {}
        if r.status_code == 200 and data.get("code") == "Ok":
            dist = float(data["waypoints"][0]["distance"])
            out[point] = radius_m is None or dist <= radius_m
        elif r.status_code == 400 and data.get("code") == "NoSegment":
            out[point] = False
        elif r.status_code in (401, 403):
            raise ReplayError(f"the service refused /nearest with {r.status_code}: pass a dispatcher --token")
        else:
            raise ReplayError(f"/nearest answered {r.status_code}: {r.text[:200]}")

    queue = iter(todo)

    async def worker() -> None:
        for point in queue:
            await one(point)

    await asyncio.gather(*(worker() for _ in range(NEAREST_CONCURRENCY)))
    return out


@dataclass
class FilterStats:
    rows: int = 0
    outside_bbox: int = 0
    off_road: int = 0
    kept: int = 0


async def on_map_trips(trips: Sequence[TaxiTrip], client: httpx.AsyncClient, bbox: BBox | None,
                       radius_m: float | None = None) -> tuple[list[TaxiTrip], FilterStats]:  # fmt: skip
    """The trips whose pickup and drop-off are both on the map (bbox, then the service's ``nearest``)."""
    stats = FilterStats(rows=len(trips))
    inside = []
    for t in trips:
        if bbox is None or (bbox.contains(t.pickup) and bbox.contains(t.dropoff)):
            inside.append(t)
        else:
            stats.outside_bbox += 1
    finite = [p for t in inside for p in (t.pickup, t.dropoff) if all(map(math.isfinite, p))
              and -90 <= p[0] <= 90 and -180 <= p[1] <= 180]  # fmt: skip
    snapped = await snaps_to_road(client, finite, radius_m)
    kept = [t for t in inside if snapped.get(t.pickup, False) and snapped.get(t.dropoff, False)]
    stats.off_road = len(inside) - len(kept)
    stats.kept = len(kept)
    return kept, stats


# -- trips to requests -------------------------------------------------------------------------------


def request_times(trips: Sequence[TaxiTrip], spread_minutes: bool) -> list[datetime]:
    """Each trip's request time: its pickup, spread over the minute when whole-minute times are shared."""
    times = [t.pickup_at for t in trips]
    if not spread_minutes:
        return times
    groups: dict[datetime, list[int]] = defaultdict(list)
    for i, t in enumerate(trips):
        if t.pickup_at.second == 0 and t.pickup_at.microsecond == 0:
            groups[t.pickup_at].append(i)
    for minute, members in groups.items():
        for j, i in enumerate(members):
            times[i] = minute + timedelta(seconds=60.0 * j / len(members))
    return times


def _distances_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    p1, p2 = math.radians(lat), np.radians(lats)
    dphi, dlmb = p2 - p1, np.radians(lons - lon)
    a = np.sin(dphi / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def build_requests(trips: Sequence[TaxiTrip], plan: TripPlan) -> list[ReplayRecord]:
    """One ``POST /v1/routes`` body per trip (already filtered to the map), at its request time."""
    times = request_times(trips, plan.spread_minutes)
    by_drop = sorted(range(len(trips)), key=lambda i: (trips[i].dropoff_at, trips[i].line))
    drop_at = [trips[i].dropoff_at for i in by_drop]
    lats = np.array([trips[i].dropoff[0] for i in by_drop])
    lons = np.array([trips[i].dropoff[1] for i in by_drop])
    window = timedelta(minutes=plan.window_min)
    records = []
    for pos, i in enumerate(by_drop):
        trip = trips[i]
        lo = bisect.bisect_left(drop_at, trip.dropoff_at)  # the same drop-off time counts as "from" it
        hi = bisect.bisect_right(drop_at, trip.dropoff_at + window)
        near = np.flatnonzero(_distances_km(trip.dropoff[0], trip.dropoff[1], lats[lo:hi], lons[lo:hi])
                              <= plan.radius_km) + lo  # fmt: skip
        others = [trips[by_drop[j]] for j in near.tolist() if j != pos][: plan.k]
        stops = [{"id": f"trip-{t.line}", "lat": t.dropoff[0], "lon": t.dropoff[1]} for t in (trip, *others)]
        body: dict[str, Any] = {
            "driver_id": f"taxi-{trip.medallion[:12].lower()}",
            "start": {"lat": trip.pickup[0], "lon": trip.pickup[1]},
            "end": "open",
            "depart_at": times[i].isoformat(),
            "stops": stops,
        }
        if plan.time_budget_ms is not None:
            body["options"] = {"time_budget_ms": plan.time_budget_ms}
        records.append((times[i], trip.line, ReplayRecord(times[i], body)))
    records.sort(key=lambda r: (r[0], r[1]))
    return [r for _, _, r in records]


async def convert(
    path: Path, url: str, token: str | None, plan: TripPlan, bbox: BBox | None = None,
    radius_m: float | None = None, log: Callable[[str], None] = lambda line: None,
) -> tuple[list[ReplayRecord], dict[str, Any]]:  # fmt: skip
    """Read the CSV, keep the on-map trips (asking the service at ``url``), build the requests."""
    trips = read_trips(path)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        if bbox is None:
            bbox = await map_bbox(client)
            if bbox is None:
                log("note: the service reports no map bounding box; asking /nearest for every point (slower)")
        kept, stats = await on_map_trips(trips, client, bbox, radius_m)
    if not kept:
        raise ReplayError(f"{path}: none of the {len(trips)} trips lies on the active map")
    records = build_requests(kept, plan)
    n_stops = [len(r.body["stops"]) for r in records]
    info = {
        "trips_read": stats.rows, "outside_bbox": stats.outside_bbox, "off_road": stats.off_road,
        "trips_kept": stats.kept, "requests": len(records), "stops_mean": round(float(np.mean(n_stops)), 2),
        "stops_max": max(n_stops), "map_bbox": None if bbox is None else [bbox.min_lat, bbox.min_lon, bbox.max_lat,
                                                                          bbox.max_lon],
        "k": plan.k, "radius_km": plan.radius_km, "window_min": plan.window_min,
        "spread_minutes": plan.spread_minutes, "snap_radius_m": radius_m,
    }  # fmt: skip
    return records, info
