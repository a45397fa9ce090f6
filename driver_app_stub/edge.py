"""Edge fallback: a driver app that cannot reach the service plans its remaining stops itself.

There is no road graph on the device, so travel times are estimated from the straight-line
distance: ``haversine x detour_factor / speed``. The order comes from the same optimizer
the service runs (``gnn_model.search``), guided by the small int8 ONNX model when the app
carries one (``model.int8.onnx`` and ``manifest.json`` in ``model_dir``), else the plain
search (k-nearest candidates). The answer is marked provisional: the driver asks the
service again as soon as it answers.

Dependency exception (decided for issue 7): ``driver_app_stub`` otherwise imports only
``routing_core``; this module also imports ``gnn_model``, lazily, on the first fallback. The
on-device model and search are the product's edge package; ``gnn_model`` itself imports only
``routing_core`` (features, search, ONNX Runtime), so no server code (graph_store,
routing_api, SQL, queues) reaches the device.

How much worse such routes are, measured on real road travel times: ``bench/edge_fallback.py``
and the "Edge fallback" section of BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driver_app_stub.route_path import haversine_m
from routing_core.problem import EndKind, Problem, evaluate

log = logging.getLogger(__name__)

# Assumed: the fastest road route is DETOUR_FACTOR x the straight line, driven at SPEED_KPH. How far
# real road times are from this (and so how optimistic provisional ETAs are) is measured by
# bench/edge_fallback.py; the order of an open route without windows does not depend on them.
DETOUR_FACTOR = 1.35
SPEED_KPH = 30.0
TIME_BUDGET_MS = 50.0


@dataclass(frozen=True)
class LocalStop:
    id: str
    lat: float
    lon: float
    service_s: float = 0.0


@dataclass(frozen=True)
class LocalLeg:
    to: str
    duration_s: float  # estimated
    distance_m: float  # straight line x detour factor
    points: tuple[tuple[float, float], ...]  # straight line: from, to


@dataclass(frozen=True)
class LocalRoute:
    """A provisional route: visiting order, estimated legs and arrivals (seconds after departure)."""

    order: tuple[str, ...]
    legs: tuple[LocalLeg, ...]
    arrival_s: tuple[float, ...]
    departure_s: tuple[float, ...]
    guided: bool  # the model's scores guided the search
    provisional: bool = True


def travel_time_matrix(points: np.ndarray, speed_kph: float = SPEED_KPH,
                       detour_factor: float = DETOUR_FACTOR) -> np.ndarray:  # fmt: skip
    """Estimated seconds between (lat, lon) rows: great-circle metres x detour / speed."""
    lat = np.radians(points[:, 0])
    lon = np.radians(points[:, 1])
    dp = lat[None, :] - lat[:, None]
    dl = lon[None, :] - lon[:, None]
    a = np.sin(dp / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dl / 2) ** 2
    metres = 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return metres * detour_factor / (speed_kph / 3.6)


class LocalPlanner:
    """The on-device planner. Thread-safe; the model and the compiled search load on first use."""

    def __init__(self, model_dir: Path | None, *, speed_kph: float = SPEED_KPH, detour_factor: float = DETOUR_FACTOR,
                 time_budget_ms: float = TIME_BUDGET_MS, seed: int = 0) -> None:  # fmt: skip
        if not speed_kph > 0:
            raise ValueError(f"speed_kph must be > 0, got {speed_kph}")
        if not detour_factor >= 1.0:
            raise ValueError(f"detour_factor must be >= 1, got {detour_factor}")
        self.model_dir = model_dir
        self.speed_kph = speed_kph
        self.detour_factor = detour_factor
        self.time_budget_ms = time_budget_ms
        self.seed = seed
        self._lock = threading.Lock()
        self._loaded = False
        self._scorer: Any = None
        self.model_note = "not loaded"

    def load(self) -> None:
        """Compile/load the search kernels and the int8 model (when present). Idempotent."""
        with self._lock:
            if self._loaded:
                return
            from gnn_model.search import warm_up

            warm_up()
            self._scorer = self._load_scorer()
            self._loaded = True

    def _load_scorer(self) -> Any:
        from gnn_model.compile import INT8_FILE

        if self.model_dir is None or not (self.model_dir / INT8_FILE).is_file():
            self.model_note = f"no {INT8_FILE} in {self.model_dir}: plain search"
            log.info("edge planner: %s", self.model_note)
            return None
        from gnn_model.backends import FeatureBatch, OnnxRuntimeBackend

        try:
            backend = OnnxRuntimeBackend(self.model_dir, int8=True)
        except Exception as exc:  # a broken file on the device must not stop the driver
            self.model_note = f"int8 model not usable ({exc}): plain search"
            log.warning("edge planner: %s", self.model_note)
            return None
        self.model_note = f"int8 model {backend.version}"

        def score(features: Any) -> np.ndarray:
            return backend.predict(FeatureBatch.of([features]))[0]

        return score

    @property
    def guided(self) -> bool:
        return self._scorer is not None

    def plan(self, start: tuple[float, float], stops: list[LocalStop]) -> LocalRoute:
        """Order ``stops`` on an open route from ``start`` (lat, lon), on the local travel-time estimate."""
        if not stops:
            return LocalRoute((), (), (), (), guided=False)
        self.load()
        from gnn_model.policy import guided_solve
        from gnn_model.search import SearchParams

        pts = [start, *((s.lat, s.lon) for s in stops)]
        coords = np.asarray(pts, dtype=np.float64)
        matrix = travel_time_matrix(coords, self.speed_kph, self.detour_factor)
        service = np.asarray([0.0, *(s.service_s for s in stops)])
        problem = Problem(matrix=matrix, service_s=service, end=EndKind.OPEN, coords=coords)
        result = guided_solve(problem, SearchParams(time_limit_ms=self.time_budget_ms, seed=self.seed), self._scorer)
        ev = evaluate(problem, result.order)
        if not ev.valid:  # the evaluator guards every answer, on the device too
            raise RuntimeError(f"local search produced an invalid route: {ev.problems}")
        legs = []
        prev = 0
        for node in result.order:
            a, b = pts[prev], pts[node]
            legs.append(LocalLeg(stops[node - 1].id, float(matrix[prev, node]),
                                 haversine_m(*a, *b) * self.detour_factor, (a, b)))  # fmt: skip
            prev = node
        return LocalRoute(tuple(stops[n - 1].id for n in result.order), tuple(legs),
                          tuple(float(x) for x in ev.arrival), tuple(float(x) for x in ev.departure),
                          guided=self.guided)  # fmt: skip

    def order(self, points: np.ndarray) -> tuple[int, ...]:
        """Visiting order (indices into ``points[1:]`` + 1) of an open route from ``points[0]``: for benchmarks."""
        stops = [LocalStop(str(i), float(lat), float(lon)) for i, (lat, lon) in enumerate(points[1:], start=1)]
        route = self.plan((float(points[0, 0]), float(points[0, 1])), stops)
        return tuple(int(s) for s in route.order)
