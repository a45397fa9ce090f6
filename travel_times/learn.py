"""Learning travel times for a map from trips: the data, every method side by side, the profile.

The base model's edge times (``graph_store.travel_model``) are what every method multiplies;
trip paths are the fastest paths under the base model, fixed before learning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from gnn_model.eta import baselines
from gnn_model.eta.evaluation import breakdown, scores
from gnn_model.eta.export import export_onnx, onnx_multipliers, torch_multipliers, version_of
from gnn_model.eta.features import EdgeInputs, edge_inputs
from gnn_model.eta.model import EtaEnsemble, EtaGnn, minute_of_week
from gnn_model.eta.training import FitReport, TripBatch, fit_gnn, predict_trips
from gnn_model.eta.trips import Trips, clean_mask
from graph_store.road_rules import ROAD_CLASSES
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from graph_store.travel_model import edge_curvature
from travel_times.dataset import TripPaths, trip_paths

# Paths are taken at a quiet hour under the base model (no learned profile, no live traffic).
_PATH_TIME = datetime(2016, 1, 4, 3, 0)
# GNNs trained from different seeds and averaged: one run's luck moves the errors by ~1 point.
MEMBERS = 3
HALF_LIFE_DAYS: float | None = 60.0
METHODS = ("base", "global_factor", "class_least_squares", "edge_means", "gnn")


@dataclass(frozen=True)
class Prepared:
    graph: RoadGraph
    inputs: EdgeInputs
    base_s: np.ndarray
    edge_class: np.ndarray
    paths: TripPaths
    batch: TripBatch
    read: int  # trips given
    cleaned: int  # trips left by clean_mask


def edge_model_inputs(graph: RoadGraph) -> tuple[EdgeInputs, np.ndarray, np.ndarray]:
    """(GNN inputs, base seconds per edge, road class index per edge) of a map."""
    net = graph.network
    c = net.controls()
    inputs = edge_inputs(net.edge_source, net.edge_target, graph.edge_length_m, net.edge_speed_kph,
                         net.edge_road_class, ROAD_CLASSES, net.edge_oneway, edge_curvature(net),
                         c, c["lanes"], c["maxspeed_tagged"])  # fmt: skip
    base_s = graph.edge_length_m / (net.edge_speed_kph / 3.6) + graph.edge_delay_s
    cls = np.asarray([ROAD_CLASSES.index(x) if x in ROAD_CLASSES else len(ROAD_CLASSES) for x in net.edge_road_class])
    return inputs, base_s, cls


def batch_of(paths: TripPaths) -> TripBatch:
    coo = paths.coverage.tocoo()
    return TripBatch(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64),
                     minute_of_week(paths.trips.pickup_at), paths.trips.duration_s.astype(np.float64))  # fmt: skip


def prepare(graph: RoadGraph, trips: Trips | TripPaths) -> Prepared:
    """Trips with their paths: a trip file's trips are cleaned and routed; ``TripPaths`` (matched
    driver pings, whose paths are known) are taken as they are."""
    inputs, base_s, cls = edge_model_inputs(graph)
    if isinstance(trips, TripPaths):
        return Prepared(graph, inputs, base_s, cls, trips, batch_of(trips), len(trips), len(trips))
    clean = trips.take(clean_mask(trips))
    paths = trip_paths(RoutingSnapshot(graph, TrafficState()), clean, _PATH_TIME)
    return Prepared(graph, inputs, base_s, cls, paths, batch_of(paths), len(trips), len(clean))


@dataclass
class Fitted:
    """One method fitted on training trips: predicts [N, 3] seconds and gives multipliers [T, E, 3]."""

    name: str
    predict: Any
    multipliers: Any
    seconds: float
    report: FitReport | None = None
    model: EtaGnn | EtaEnsemble | None = None


def recency_weights(pickup_at: np.ndarray, half_life_days: float | None) -> np.ndarray | None:
    """Weight of each trip in the GNN's loss: halved every ``half_life_days`` back from the latest trip
    (streets slow down with the seasons; the latest months say most about the next)."""
    if half_life_days is None:
        return None
    age_days = (pickup_at.max() - pickup_at).astype("timedelta64[s]").astype(np.float64) / 86400.0
    return np.power(0.5, age_days / half_life_days)


def fit_methods(prep: Prepared, train: np.ndarray, *, seed: int = 0, max_epochs: int = 400,
                methods: tuple[str, ...] = METHODS, members: int = MEMBERS,
                half_life_days: float | None = HALF_LIFE_DAYS) -> dict[str, Fitted]:  # fmt: skip
    """Every method in ``methods`` fitted on the trips ``train`` (indices into ``prep``, in time order)."""
    tb = prep.batch.take(train)
    out: dict[str, Fitted] = {}
    e = prep.base_s.size

    def ones(minutes: np.ndarray) -> np.ndarray:
        return np.ones((np.size(minutes), e, 3))

    if "base" in methods:
        base = baselines.Multipliers(np.ones(e), np.ones(48), 1.0, 1.0)
        out["base"] = Fitted("base", lambda b: base.predict(b, prep.base_s), ones, 0.0)
    for name, fn in (("global_factor", lambda: baselines.global_factor(tb, prep.base_s)),
                     ("class_least_squares", lambda: baselines.class_least_squares(tb, prep.base_s, prep.edge_class)),
                     ("edge_means", lambda: baselines.edge_means(tb, prep.base_s))):  # fmt: skip
        if name in methods:
            t0 = time.perf_counter()
            m = fn()
            out[name] = Fitted(name, lambda b, m=m: m.predict(b, prep.base_s), m.at, time.perf_counter() - t0)
    if "gnn" in methods:
        order = np.arange(len(train))  # ``train`` is given in time order
        weighted = replace(tb, weight=recency_weights(prep.paths.trips.pickup_at[train], half_life_days))
        model, report = fit_gnn(prep.inputs, prep.base_s, weighted, order=order, seed=seed, max_epochs=max_epochs,
                                members=members)  # fmt: skip
        out["gnn"] = Fitted("gnn", lambda b: predict_trips(model, prep.inputs, prep.base_s, b),
                            lambda minutes: torch_multipliers(model, prep.inputs, minutes), report.seconds,
                            report, model)  # fmt: skip
    return out


def evaluate(prep: Prepared, fitted: dict[str, Fitted], test: np.ndarray) -> dict[str, Any]:
    """Scores of each method on the trips ``test``, applied as the service applies them: per
    15-minute bucket of the week (trip seconds = covered base seconds x the bucket's multipliers)."""
    tb = prep.batch.take(test)
    actual = tb.duration_s
    hour = prep.paths.trips.pickup_at[test].astype("datetime64[h]").astype(np.int64) % 24
    route_m = prep.paths.route_m[test]
    out: dict[str, Any] = {}
    for name, f in fitted.items():
        pred = bucketed_predictions(prep, f.multipliers, tb)
        out[name] = {**scores(pred, actual), **breakdown(pred, actual, route_m, hour), "fit_s": round(f.seconds, 1)}
    return out


def bucketed_predictions(prep: Prepared, multipliers: Any, tb: TripBatch) -> np.ndarray:
    """[N, 3] trip seconds from per-bucket multipliers (what the traffic layer applies)."""
    buckets, inv = np.unique(tb.minutes, return_inverse=True)
    pred = np.zeros((len(tb), 3))
    for s in range(0, buckets.size, 48):
        m = multipliers(buckets[s : s + 48])  # [t, E, 3]
        sel = (inv[tb.row] >= s) & (inv[tb.row] < s + 48)
        r, e = tb.row[sel], tb.edge[sel]
        contrib = (tb.share[sel] * prep.base_s[e])[:, None] * m[inv[r] - s, e]
        for q in range(3):
            pred[:, q] += np.bincount(r, weights=contrib[:, q], minlength=len(tb))
    return pred


@dataclass
class LearnedResult:
    version: str
    onnx_model: bytes
    metrics: dict[str, Any] = field(default_factory=dict)


def learn_profile(graph: RoadGraph, trips: Trips | TripPaths, *, holdout_share: float = 0.15, seed: int = 0,
                  max_epochs: int = 400, source: str = "trips", members: int = MEMBERS,
                  half_life_days: float | None = HALF_LIFE_DAYS) -> LearnedResult:  # fmt: skip
    """Evaluate on the latest ``holdout_share`` of the trips (trained on the earlier ones), then
    train on all of them and export the profile to ONNX (parity with torch checked)."""
    prep = prepare(graph, trips)
    if len(prep.paths) < 20:
        raise ValueError(f"only {len(prep.paths)} usable trips on this map (need at least 20)")
    order = np.argsort(prep.paths.trips.pickup_at, kind="stable")
    n_hold = max(1, int(len(order) * holdout_share))
    train, hold = order[:-n_hold], order[-n_hold:]
    fitted = fit_methods(prep, train, seed=seed, max_epochs=max_epochs, members=members,
                         half_life_days=half_life_days)  # fmt: skip
    evaluation = evaluate(prep, fitted, hold)
    everything = prep.batch.take(order)
    everything = replace(everything, weight=recency_weights(prep.paths.trips.pickup_at[order], half_life_days))
    final, report = fit_gnn(prep.inputs, prep.base_s, everything, order=np.arange(order.size),
                            seed=seed, max_epochs=max_epochs, members=members)  # fmt: skip
    onnx_model = export_onnx(final, prep.inputs)
    probe = np.arange(0.0, 7 * 1440.0, 360.0) + 7.5
    parity = float(np.max(np.abs(onnx_multipliers(onnx_model, probe) - torch_multipliers(final, prep.inputs, probe))))
    if not parity < 1e-3:
        raise RuntimeError(f"ONNX export differs from torch by {parity}")
    p = prep.paths.trips.pickup_at[order]
    metrics = {
        "source": source,
        "trips_read": prep.read, "trips_clean": prep.cleaned, "trips_on_map": len(prep.paths),
        "trained_from": str(p[0]), "trained_until": str(p[-1]),
        "holdout_from": str(prep.paths.trips.pickup_at[hold].min()), "holdout_trips": int(hold.size),
        "holdout": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("by_")} for k, v in evaluation.items()},
        "epochs": report.epochs, "fit_s": round(report.seconds, 1), "onnx_parity_max_abs": parity,
        "edges": int(prep.base_s.size), "seed": seed, "members": members, "half_life_days": half_life_days,
    }  # fmt: skip
    return LearnedResult(version_of(onnx_model), onnx_model, metrics)
