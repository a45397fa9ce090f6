"""Simulated driver apps: many drivers plan, drive, ping and re-plan against the running service.

Each driver gets a start and a set of stops: random points of the active map (uniform in the
map's extent from ``/readyz``, snapped to a road by ``/nearest``; points in water are drawn
again) or rows of a CSV file. Then, in simulated time running ``speedup`` times faster than
the wall clock:

* **plan**: ``POST /v1/routes`` with its position, its remaining stops, ``end: open`` and
  ``depart_at`` = the simulated now;
* **drive**: along each leg's road geometry (polyline6). The plan's pace of the leg
  (distance / duration; the answer has no per-road speeds) meets "real" traffic: a speed
  factor per road segment, seeded and the same for every driver (``TrafficWorld``: a share
  ``congested_share`` of segments runs at 0.35-0.6 of the plan's pace, the others at
  0.9-1.1). At a stop it stays ``service_s``, then marks the stop done;
* **ping**: ``POST /v1/drivers/{id}/positions`` every ``ping_interval_s`` simulated seconds
  with position, timestamp (simulated), observed speed and heading. The service turns
  these speeds into live traffic (``routing_api/ping_traffic.py``);
* **re-plan** the remaining stops when (a) progress is later than the plan by more than
  ``late_threshold_s``, or (b) the traffic epoch changed: the ping's answer carries the
  service's current ``traffic_epoch`` and the route answer the one it was planned under
  (``versions.traffic_epoch``). No polling. Re-plans of one driver are at least
  ``replan_cooldown_s`` simulated seconds apart; none while it serves a stop;
* **edge fallback**: when a route request fails (connect error, timeout, 5xx, 429), the
  driver plans locally (``driver_app_stub.edge``: straight-line estimate, same search, int8
  model when present) and drives that provisional route along straight lines. Every
  ``retry_s`` wall seconds, and at once when a ping gets through, it asks the service
  again; the service's answer replaces the provisional route.

A stop is on time when reached by its first promised arrival (the first plan's ETA) plus
``on_time_slack_s``. The report counts route requests, re-plans by reason, pings, on-time
share, provisional routes and errors by kind.

One token (``--token``) serves every driver, so it must be a dispatcher token when auth is on
(a driver token is bound to one driver id).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from driver_app_stub.edge import LocalPlanner, LocalRoute, LocalStop
from driver_app_stub.route_path import RoutePath, decode_polyline

log = logging.getLogger(__name__)

CONGESTED_FACTOR = (0.35, 0.6)
FREE_FACTOR = (0.9, 1.1)
MAX_DRAW_ATTEMPTS = 20  # random points per wanted stop before giving up (a map that is mostly water)


class ConfigError(ValueError):
    """A bad setting; ``option`` names it (as the CLI spells it, without the dashes)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"--{option}: {message}")
        self.option = option


class SimulationError(RuntimeError):
    """The simulation cannot run (service refuses the token, no stops to draw); the message says why."""


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of one run. Times: ``duration_s`` and ``retry_s`` in wall seconds, the others simulated."""

    url: str
    count: int = 3
    speedup: float = 10.0
    duration_s: float = 60.0
    token: str | None = None
    stops_file: Path | None = None
    stops_per_driver: int = 8
    seed: int = 0
    ping_interval_s: float = 2.0
    late_threshold_s: float = 120.0
    replan_cooldown_s: float = 60.0
    congested_share: float = 0.3
    service_s: float = 60.0
    on_time_slack_s: float = 300.0
    retry_s: float = 1.0
    request_timeout_s: float = 10.0
    time_budget_ms: float = 50.0
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")) or len(self.url) < len("http://x"):
            raise ConfigError("url", f"must be an http:// or https:// URL, got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        checks: list[tuple[str, str, bool, str]] = [
            ("count", "count", 1 <= self.count <= 10_000, "must be in 1..10000"),
            ("speedup", "speedup", 0 < self.speedup <= 1000, "must be in (0, 1000]"),
            ("duration", "duration_s", 0 < self.duration_s <= 86_400, "must be in (0, 86400] seconds"),
            ("stops-per-driver", "stops_per_driver", 1 <= self.stops_per_driver <= 200, "must be in 1..200"),
            ("ping-interval", "ping_interval_s", 0.1 <= self.ping_interval_s <= 3600,
             "must be in 0.1..3600 simulated seconds"),
            ("late-threshold", "late_threshold_s", self.late_threshold_s > 0, "must be > 0 seconds"),
            ("replan-cooldown", "replan_cooldown_s", self.replan_cooldown_s >= 0, "must be >= 0 seconds"),
            ("congested-share", "congested_share", 0 <= self.congested_share <= 1, "must be in 0..1"),
            ("service-s", "service_s", 0 <= self.service_s <= 86_400, "must be in 0..86400 seconds"),
            ("on-time-slack", "on_time_slack_s", self.on_time_slack_s >= 0, "must be >= 0 seconds"),
            ("retry", "retry_s", self.retry_s > 0, "must be > 0 seconds"),
            ("request-timeout", "request_timeout_s", self.request_timeout_s > 0, "must be > 0 seconds"),
            ("time-budget-ms", "time_budget_ms", 1 <= self.time_budget_ms <= 10_000, "must be in 1..10000"),
        ]  # fmt: skip
        for option, name, ok, message in checks:
            if not ok:
                raise ConfigError(option, f"{message}, got {getattr(self, name)}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token", "must not be empty")
        if self.stops_file is not None and not self.stops_file.is_file():
            raise ConfigError("stops-file", f"no such file: {self.stops_file}")


@dataclass(frozen=True)
class StopPoint:
    id: str
    lat: float
    lon: float


def read_stops_file(path: Path) -> list[StopPoint]:
    """Points of a CSV file with a header: ``lat,lon`` and optionally ``id``. Errors name the line."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or ())
            if not {"lat", "lon"} <= fields:
                raise ConfigError("stops-file", f"{path}: the header must name columns lat and lon")
            points: list[StopPoint] = []
            seen: set[str] = set()
            for line, row in enumerate(reader, start=2):
                try:
                    lat, lon = float(row["lat"]), float(row["lon"])
                except (TypeError, ValueError):
                    raise ConfigError("stops-file", f"{path}:{line}: lat and lon must be numbers") from None
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise ConfigError("stops-file", f"{path}:{line}: lat must be in -90..90 and lon in -180..180")
                stop_id = (row.get("id") or "").strip() or f"p{line - 1}"
                if stop_id in seen:
                    raise ConfigError("stops-file", f"{path}:{line}: duplicate id {stop_id!r}")
                seen.add(stop_id)
                points.append(StopPoint(stop_id, lat, lon))
    except OSError as exc:
        raise ConfigError("stops-file", f"cannot read {path}: {exc.strerror}") from None
    return points


class TrafficWorld:
    """The "real" traffic of the simulation: a speed factor per road segment (multiplier of the
    plan's pace), drawn from the seed and the segment's identity, so every driver meets the same."""

    def __init__(self, seed: int, congested_share: float) -> None:
        self.seed = seed
        self.congested_share = congested_share
        self._factors: dict[tuple[int, ...], float] = {}

    def factor(self, key: tuple[int, ...]) -> float:
        f = self._factors.get(key)
        if f is None:
            digest = hashlib.blake2b(repr((self.seed, key)).encode(), digest_size=8).digest()
            u1 = int.from_bytes(digest[:4], "big") / 2**32
            u2 = int.from_bytes(digest[4:], "big") / 2**32
            lo, hi = CONGESTED_FACTOR if u1 < self.congested_share else FREE_FACTOR
            f = self._factors[key] = lo + u2 * (hi - lo)
        return f


class SimClock:
    """Simulated time: starts at the wall clock's now and runs ``speedup`` times faster."""

    def __init__(self, speedup: float) -> None:
        self.speedup = speedup
        self.start = datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speedup)


# -- the service, over HTTP ----------------------------------------------------------------------


class ServiceUnavailable(Exception):
    """The service did not answer usefully: connect error, timeout, 5xx, 429. ``kind`` says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class RequestRejected(Exception):
    """A 4xx other than 401/403/429: the request itself was refused."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class ServiceClient:
    """The few endpoints a driver app uses; one ``httpx.AsyncClient`` for every driver."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str | None) -> None:
        self.http = http
        self.base = base_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(self, method: str, path: str, *, json_body: Any = None, timeout: float | None = None) -> Any:
        try:
            resp = await self.http.request(method, self.base + path, json=json_body, headers=self.headers,
                                           timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)  # fmt: skip
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailable("connect", str(exc) or type(exc).__name__) from None
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable("timeout", str(exc) or type(exc).__name__) from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable("network", str(exc) or type(exc).__name__) from None
        if resp.status_code in (401, 403):
            raise SimulationError(f"the service refused the token on {path} (HTTP {resp.status_code}): "
                                  "pass a dispatcher token with --token")  # fmt: skip
        if resp.status_code == 429:
            raise ServiceUnavailable("http_429", "rate limited")
        if resp.status_code >= 500:
            raise ServiceUnavailable("http_5xx", f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise RequestRejected(resp.status_code, resp.text[:300])
        return resp.json()

    async def readiness(self) -> dict[str, Any]:
        """``/readyz``'s checks, also when it answers 503 (not ready)."""
        try:
            resp = await self.http.get(self.base + "/readyz", headers=self.headers)
        except httpx.TransportError as exc:
            raise ServiceUnavailable("connect", str(exc) or type(exc).__name__) from None
        try:
            return dict(resp.json().get("checks", {}))
        except ValueError:
            raise ServiceUnavailable("http_5xx", f"/readyz answered HTTP {resp.status_code} without JSON") from None

    async def nearest(self, lat: float, lon: float) -> tuple[float, float] | None:
        """The nearest road position, or None when there is no road within the service's snap limit."""
        try:
            body = await self._call("GET", f"/nearest/v1/driving/{lon:.6f},{lat:.6f}")
        except RequestRejected as exc:
            if "NoSegment" in str(exc):
                return None
            raise
        lon_s, lat_s = body["waypoints"][0]["location"]
        return float(lat_s), float(lon_s)

    async def plan(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return dict(await self._call("POST", "/v1/routes", json_body=body, timeout=timeout))

    async def ping(self, driver_id: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return dict(await self._call("POST", f"/v1/drivers/{driver_id}/positions", json_body=body, timeout=timeout))


# -- one driver -------------------------------------------------------------------------------------


@dataclass
class StopState:
    point: StopPoint
    promised: datetime | None = None  # first planned arrival
    arrived: datetime | None = None


@dataclass
class ActiveLeg:
    to: str
    path: RoutePath
    depart: datetime  # planned departure from the leg's start
    duration_s: float  # planned

    @property
    def pace_mps(self) -> float:
        return self.path.length_m / self.duration_s if self.duration_s > 0 else float("inf")


@dataclass
class ActivePlan:
    legs: list[ActiveLeg]
    epoch: int | None
    provisional: bool
    route_id: str | None
    made_at: datetime


@dataclass
class SimulationStats:
    route_requests: int = 0
    service_routes: int = 0
    provisional_routes: int = 0
    replans: Counter[str] = field(default_factory=Counter)
    pings_sent: int = 0
    pings_accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stops_total: int = 0
    stops_done: int = 0
    stops_on_time: int = 0
    epochs_seen: set[int] = field(default_factory=set)


class SimDriver:
    """One simulated driver app (a coroutine); see the module docstring for what it does."""

    def __init__(self, sim: Simulation, driver_id: str, start: StopPoint, stops: list[StopPoint]) -> None:
        self.sim = sim
        self.id = driver_id
        self.lat, self.lon = start.lat, start.lon
        self.remaining: dict[str, StopState] = {s.id: StopState(s) for s in stops}
        self.done: list[StopState] = []
        self.plan: ActivePlan | None = None
        self.leg = 0
        self.along_m = 0.0
        self.service_until: datetime | None = None
        self.speed_mps = 0.0
        self.heading: float | None = None
        self.t = sim.clock.now()
        self.last_attempt = -float("inf")  # monotonic seconds of the last route request
        self.latest_epoch: int | None = None
        self.plans = 0

    # -- driving ------------------------------------------------------------------------------------

    def advance(self, until: datetime) -> None:
        """Drive (or serve a stop) from ``self.t`` to ``until``, in the world's traffic."""
        budget = (until - self.t).total_seconds()
        world = self.sim.world
        while budget > 1e-9:
            if self.service_until is not None:
                step = min(budget, max(0.0, (self.service_until - self.t).total_seconds()))
                self.t += timedelta(seconds=step)
                budget -= step
                self.speed_mps = 0.0
                if self.t >= self.service_until:
                    self.service_until = None
                continue
            if self.plan is None or self.leg >= len(self.plan.legs):
                self.speed_mps = 0.0  # nothing to drive: done, or waiting for a plan
                break
            leg = self.plan.legs[self.leg]
            path = leg.path
            if self.along_m >= path.length_m - 1e-6 or leg.pace_mps == float("inf"):
                self._arrive(leg.to)
                continue
            i = path.segment_at(self.along_m)
            speed = leg.pace_mps * world.factor(path.segment_key(i))
            to_end = path.cumulative[i + 1] - self.along_m
            need = to_end / speed
            if need <= budget:
                self.along_m = path.cumulative[i + 1]
                self.t += timedelta(seconds=need)
                budget -= need
            else:
                self.along_m += speed * budget
                self.t += timedelta(seconds=budget)
                budget = 0.0
            pos = path.position(self.along_m)
            self.lat, self.lon, self.heading, self.speed_mps = pos.lat, pos.lon, pos.heading_deg, speed
        self.t = max(self.t, until)

    def _arrive(self, stop_id: str) -> None:
        state = self.remaining.pop(stop_id, None)
        self.leg += 1
        self.along_m = 0.0
        if state is None:  # a leg to a stop already done (cannot happen with our own plans)
            return
        state.arrived = self.t
        self.lat, self.lon = state.point.lat, state.point.lon
        self.done.append(state)
        stats = self.sim.stats
        stats.stops_done += 1
        slack = timedelta(seconds=self.sim.config.on_time_slack_s)
        if state.promised is None or state.arrived <= state.promised + slack:
            stats.stops_on_time += 1
        service = self.sim.config.service_s
        self.service_until = self.t + timedelta(seconds=service) if service > 0 else None

    def lag_s(self) -> float:
        """Seconds behind the plan at the current position (negative: ahead)."""
        if self.plan is None or self.leg >= len(self.plan.legs) or self.service_until is not None:
            return 0.0
        leg = self.plan.legs[self.leg]
        share = self.along_m / leg.path.length_m if leg.path.length_m > 0 else 1.0
        planned = leg.depart + timedelta(seconds=share * leg.duration_s)
        return (self.t - planned).total_seconds()

    # -- talking to the service --------------------------------------------------------------------

    async def ping(self) -> None:
        sim = self.sim
        body: dict[str, Any] = {"lat": round(self.lat, 7), "lon": round(self.lon, 7), "timestamp": self.t.isoformat(),
                                "speed_mps": round(min(self.speed_mps, 99.0), 2)}  # fmt: skip
        if self.heading is not None and self.speed_mps > 0:
            body["heading_deg"] = round(self.heading, 1) % 360.0
        try:
            answer = await sim.client.ping(self.id, body, timeout=min(5.0, sim.config.request_timeout_s))
        except (ServiceUnavailable, RequestRejected) as exc:
            sim.stats.pings_sent += 1
            sim.stats.errors[f"ping_{_kind(exc)}"] += 1
            return
        # (counted when answered: a ping cut short by the end of the run is not counted)
        sim.stats.pings_sent += 1
        sim.stats.pings_accepted += 1
        epoch = answer.get("traffic_epoch")
        if isinstance(epoch, int):
            self.latest_epoch = epoch
            sim.stats.epochs_seen.add(epoch)
        if self.plan is not None and self.plan.provisional:
            self.last_attempt = -float("inf")  # the service answers again: ask for a route now

    def replan_reason(self) -> str | None:
        plan = self.plan
        if not self.remaining or self.service_until is not None:
            return None
        if plan is None or plan.provisional:
            return "service_back" if time.monotonic() - self.last_attempt >= self.sim.config.retry_s else None
        if (self.t - plan.made_at).total_seconds() < self.sim.config.replan_cooldown_s:
            return None
        if self.latest_epoch is not None and plan.epoch is not None and self.latest_epoch > plan.epoch:
            return "traffic"
        if self.lag_s() > self.sim.config.late_threshold_s:
            return "behind"
        return None

    async def request_route(self, reason: str) -> None:
        """Ask the service for the remaining stops; on failure plan locally (provisional)."""
        sim = self.sim
        cfg = sim.config
        self.last_attempt = time.monotonic()
        stops = [st.point for st in self.remaining.values()]
        body = {
            "driver_id": self.id, "start": {"lat": self.lat, "lon": self.lon}, "end": "open",
            "depart_at": self.t.isoformat(),
            "stops": [{"id": s.id, "lat": s.lat, "lon": s.lon, "service_s": cfg.service_s} for s in stops],
            "options": {"time_budget_ms": cfg.time_budget_ms},
        }  # fmt: skip
        was_provisional = self.plan is not None and self.plan.provisional
        try:
            answer = await sim.client.plan(body, cfg.request_timeout_s)
        except (ServiceUnavailable, RequestRejected) as exc:
            sim.stats.route_requests += 1
            sim.stats.errors[f"route_{_kind(exc)}"] += 1
            if self.plan is None or not self.plan.provisional:
                await self._plan_locally(stops)
            return
        sim.stats.route_requests += 1
        self._use_service_route(answer)
        if reason != "initial":
            sim.stats.replans["service_back" if was_provisional else reason] += 1

    def _use_service_route(self, answer: dict[str, Any]) -> None:
        depart = self.t
        legs = []
        planned = {s["id"]: s for s in answer["stops"]}
        prev_departure = depart
        for leg in answer["legs"]:
            path = RoutePath(decode_polyline(leg["geometry"], 6) or [(self.lat, self.lon)])
            legs.append(ActiveLeg(leg["to"], path, prev_departure, float(leg["duration_s"])))
            stop = planned.get(leg["to"])
            if stop is not None:
                prev_departure = datetime.fromisoformat(stop["departure"])
        epoch = answer.get("versions", {}).get("traffic_epoch")
        self._start(ActivePlan(legs, epoch, False, answer.get("route_id"), self.t))
        for stop_id, stop in planned.items():
            state = self.remaining.get(stop_id)
            if state is not None and state.promised is None:
                state.promised = datetime.fromisoformat(stop["arrival"])
        self.sim.stats.service_routes += 1
        if isinstance(epoch, int):
            self.sim.stats.epochs_seen.add(epoch)

    async def _plan_locally(self, stops: list[StopPoint]) -> None:
        sim = self.sim
        local = [LocalStop(s.id, s.lat, s.lon, sim.config.service_s) for s in stops]
        route: LocalRoute = await asyncio.to_thread(sim.planner.plan, (self.lat, self.lon), local)
        t0 = self.t
        legs = []
        for k, leg in enumerate(route.legs):
            depart = t0 if k == 0 else t0 + timedelta(seconds=route.departure_s[k - 1])
            legs.append(ActiveLeg(leg.to, RoutePath(list(leg.points)), depart, leg.duration_s))
        self._start(ActivePlan(legs, None, True, None, self.t))
        for stop_id, arrival in zip(route.order, route.arrival_s, strict=True):
            state = self.remaining.get(stop_id)
            if state is not None and state.promised is None:
                state.promised = t0 + timedelta(seconds=arrival)
        sim.stats.provisional_routes += 1

    def _start(self, plan: ActivePlan) -> None:
        self.plan = plan
        self.plans += 1
        self.leg = 0
        self.along_m = 0.0

    async def run(self) -> None:
        sim = self.sim
        real_tick = sim.config.ping_interval_s / sim.config.speedup
        await asyncio.sleep(sim.rng.random() * real_tick)  # drivers do not ping in lockstep
        self.t = sim.clock.now()
        await self.request_route("initial")
        while self.remaining or self.service_until is not None:
            await asyncio.sleep(real_tick)
            self.advance(sim.clock.now())
            await self.ping()
            reason = self.replan_reason()
            if reason is not None:
                await self.request_route(reason)

    def summary(self) -> dict[str, Any]:
        return {"driver_id": self.id, "stops_done": len(self.done), "stops_left": len(self.remaining),
                "plans": self.plans, "provisional": bool(self.plan and self.plan.provisional),
                "route_id": self.plan.route_id if self.plan else None,
                "traffic_epoch": self.plan.epoch if self.plan else None}  # fmt: skip


def _kind(exc: Exception) -> str:
    if isinstance(exc, ServiceUnavailable):
        return exc.kind
    if isinstance(exc, RequestRejected):
        return f"http_{exc.status}"
    return type(exc).__name__


# -- the whole simulation ---------------------------------------------------------------------------


class Simulation:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.world = TrafficWorld(config.seed, config.congested_share)
        self.clock = SimClock(config.speedup)
        self.stats = SimulationStats()
        self.planner = LocalPlanner(config.model_dir, time_budget_ms=config.time_budget_ms, seed=config.seed)
        self.drivers: list[SimDriver] = []
        self.client: ServiceClient = None  # type: ignore[assignment]  # set in run()

    async def run(self) -> dict[str, Any]:
        cfg = self.config
        limits = httpx.Limits(
            max_connections=min(200, 2 * cfg.count + 4), max_keepalive_connections=min(200, 2 * cfg.count + 4)
        )
        async with httpx.AsyncClient(timeout=httpx.Timeout(cfg.request_timeout_s, connect=2.0), limits=limits) as http:
            self.client = ServiceClient(http, cfg.url, cfg.token)
            epoch_start = await self._epoch()
            assignments = await self._assign_stops()
            # The app loads its edge planner at start (compiled search, int8 model), as a device
            # would: a fallback then costs one local search, not a compilation.
            await asyncio.to_thread(self.planner.load)
            self.clock = SimClock(cfg.speedup)
            self.drivers = [SimDriver(self, f"sim-{cfg.seed}-{i}", start, stops)
                            for i, (start, stops) in enumerate(assignments)]  # fmt: skip
            self.stats.stops_total = sum(len(stops) for _, stops in assignments)
            t0 = time.monotonic()
            tasks = [asyncio.create_task(d.run(), name=d.id) for d in self.drivers]
            try:
                done, _ = await asyncio.wait(tasks, timeout=cfg.duration_s, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - t0
            epoch_end = await self._epoch()
        return self._report(elapsed, epoch_start, epoch_end)

    async def _epoch(self) -> int | None:
        try:
            checks = await self.client.readiness()
        except ServiceUnavailable:
            return None
        epoch = checks.get("map", {}).get("traffic_epoch") if isinstance(checks.get("map"), dict) else None
        return epoch if isinstance(epoch, int) else None

    async def _assign_stops(self) -> list[tuple[StopPoint, list[StopPoint]]]:
        cfg = self.config
        k = cfg.stops_per_driver
        if cfg.stops_file is not None:
            points = read_stops_file(cfg.stops_file)
            if len(points) < k + 1:
                raise ConfigError("stops-file", f"{cfg.stops_file} has {len(points)} points; each driver needs "
                                                f"{k + 1} (a start and --stops-per-driver {k})")  # fmt: skip
            out = []
            for _ in range(cfg.count):
                start, *stops = self.rng.sample(points, k + 1)
                out.append((start, stops))
            return out
        drawn = await self._draw_points(cfg.count * (k + 1))
        return [(drawn[i * (k + 1)], drawn[i * (k + 1) + 1 : (i + 1) * (k + 1)]) for i in range(cfg.count)]

    async def _draw_points(self, n: int) -> list[StopPoint]:
        """``n`` random road positions of the active map (uniform in its extent, snapped by /nearest)."""
        try:
            checks = await self.client.readiness()
        except ServiceUnavailable as exc:
            raise SimulationError(f"cannot reach the service at {self.config.url} to draw stops ({exc}); "
                                  "pass --stops-file to run without it") from None  # fmt: skip
        bbox = checks.get("map", {}).get("bbox") if isinstance(checks.get("map"), dict) else None
        if not bbox:
            raise SimulationError(f"the service at {self.config.url} reports no active map extent (/readyz "
                                  f"map: {checks.get('map')!r}); pass --stops-file")  # fmt: skip
        lat0, lon0, lat1, lon1 = (float(v) for v in bbox)
        rng = random.Random(self.config.seed + 1)
        candidates = [(rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)) for _ in range(n * MAX_DRAW_ATTEMPTS)]
        gate = asyncio.Semaphore(8)
        points: list[StopPoint] = []

        async def snap(lat: float, lon: float) -> tuple[float, float] | None:
            async with gate:
                return await self.client.nearest(lat, lon)

        next_candidate = 0
        try:
            while len(points) < n and next_candidate < len(candidates):
                batch = candidates[next_candidate : next_candidate + max(8, n - len(points))]
                next_candidate += len(batch)
                for found in await asyncio.gather(*(snap(lat, lon) for lat, lon in batch)):
                    if found is not None and len(points) < n:
                        points.append(StopPoint(f"r{len(points)}", found[0], found[1]))
        except ServiceUnavailable as exc:
            raise SimulationError(f"the service failed while drawing stops ({exc}); pass --stops-file") from None
        if len(points) < n:
            raise SimulationError(f"only {len(points)} of {n} random points of the map's extent are near a road")
        return points

    def _report(self, elapsed: float, epoch_start: int | None, epoch_end: int | None) -> dict[str, Any]:
        s = self.stats
        cfg = self.config
        return {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items() if k != "token"},
            "drivers": len(self.drivers), "wall_s": round(elapsed, 2), "simulated_s": round(elapsed * cfg.speedup, 1),
            "route_requests": s.route_requests, "service_routes": s.service_routes,
            "provisional_routes": s.provisional_routes,
            "replans": dict(sorted(s.replans.items())), "replans_total": sum(s.replans.values()),
            "pings": {"sent": s.pings_sent, "accepted": s.pings_accepted},
            "stops": {"total": s.stops_total, "done": s.stops_done, "on_time": s.stops_on_time,
                      "on_time_share": round(s.stops_on_time / s.stops_done, 4) if s.stops_done else None},
            "errors": dict(sorted(s.errors.items())), "errors_total": sum(s.errors.values()),
            "traffic_epoch": {"start": epoch_start, "end": epoch_end,
                              "seen": sorted(s.epochs_seen)},
            "edge_model": self.planner.model_note if s.provisional_routes else None,
            "per_driver": [d.summary() for d in self.drivers],
        }  # fmt: skip


def run_simulation(config: SimulationConfig) -> dict[str, Any]:
    """Run the simulation to its end (duration or every stop done); the report as a dict."""
    return asyncio.run(Simulation(config).run())


def format_summary(report: dict[str, Any]) -> str:
    """The report as a printed table."""
    stops = report["stops"]
    share = "-" if stops["on_time_share"] is None else f"{100 * stops['on_time_share']:.1f}%"
    replans = ", ".join(f"{k} {v}" for k, v in report["replans"].items()) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"
    epoch = report["traffic_epoch"]
    rows = [
        ("drivers", str(report["drivers"]),
         f"{report['wall_s']} s wall = {report['simulated_s']} s simulated (x{report['config']['speedup']})"),
        ("route requests", str(report["route_requests"]),
         f"service routes {report['service_routes']}, provisional routes {report['provisional_routes']}"),
        ("re-plans", str(report["replans_total"]), replans),
        ("pings", str(report["pings"]["sent"]), f"accepted {report['pings']['accepted']}"),
        ("stops done", f"{stops['done']}/{stops['total']}", f"on time {stops['on_time']} ({share})"),
        ("errors", str(report["errors_total"]), errors),
        ("traffic epoch", f"{_or_unknown(epoch['start'])} -> {_or_unknown(epoch['end'])}",
         f"seen in answers: {', '.join(map(str, epoch['seen'])) or 'none'}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>{vwidth}}  {detail}" for name, value, detail in rows)


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
