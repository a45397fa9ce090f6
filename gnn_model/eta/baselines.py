"""Baselines the travel-time GNN is compared with, on the same trips, paths and split.

Each gives time multipliers over the base model's edge times, per edge and moment of the week,
as the GNN does, so every method is applied and scored the same way:

* ``GlobalFactor``: one number, the median ratio of real to base-model durations.
* ``ClassLeastSquares``: one factor per road class, fitted by non-negative least squares on
  relative errors (trip time = sum over classes of the base time spent on the class x its
  factor), times a factor per day type (weekday/weekend) and hour (median of the remaining
  ratios).
* ``EdgeMeans``: historical means per edge: after the day-type x hour factor, each edge's
  factor is the mean log ratio of the trips that drove it (weighted by the time spent on it),
  shrunk towards 1 for edges seen by few trips.

The 10th and 90th percentiles of each are the median's times the train residuals' quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls

from gnn_model.eta.training import TripBatch


def _hour_key(minutes: np.ndarray) -> np.ndarray:
    m = np.asarray(minutes) % (7 * 1440)
    weekend = (m // 1440 >= 5).astype(np.int64)
    return weekend * 24 + ((m % 1440) // 60).astype(np.int64)


def _design(trips: TripBatch, values: np.ndarray, n_edges: int) -> sp.csr_matrix:
    return sp.csr_matrix((trips.share * values[trips.edge], (trips.row, trips.edge)), shape=(len(trips), n_edges))


def _spread(log_ratio: np.ndarray) -> tuple[float, float]:
    return float(np.exp(np.quantile(log_ratio, 0.1))), float(np.exp(np.quantile(log_ratio, 0.9)))


@dataclass
class Multipliers:
    """Per-edge multipliers as a function of time: ``edge`` [E] x ``hour`` [48] x quantile spread."""

    edge: np.ndarray
    hour: np.ndarray
    lo: float
    hi: float

    def at(self, minutes: np.ndarray) -> np.ndarray:
        """[T, E, 3] at T minutes of the week."""
        h = self.hour[_hour_key(minutes)]
        mid = h[:, None] * self.edge[None, :]
        return np.stack([mid * self.lo, mid, mid * self.hi], axis=-1)

    def predict(self, trips: TripBatch, base_s: np.ndarray) -> np.ndarray:
        """[N, 3] trip seconds."""
        per_trip_edge = np.asarray(_design(trips, base_s * self.edge, base_s.size).sum(axis=1)).ravel()
        mid = per_trip_edge * self.hour[_hour_key(trips.minutes)]
        return np.column_stack([mid * self.lo, mid, mid * self.hi])


def _hour_factors(ratio: np.ndarray, minutes: np.ndarray, min_trips: int = 10) -> np.ndarray:
    key = _hour_key(minutes)
    overall = float(np.median(ratio))
    out = np.full(48, overall)
    for k in range(48):
        r = ratio[key == k]
        if r.size >= min_trips:
            out[k] = float(np.median(r))
    return out


def _finish(edge: np.ndarray, hour: np.ndarray, trips: TripBatch, base_s: np.ndarray) -> Multipliers:
    m = Multipliers(edge, hour, 1.0, 1.0)
    log_ratio = np.log(trips.duration_s / m.predict(trips, base_s)[:, 1])
    m.lo, m.hi = _spread(log_ratio)
    return m


def global_factor(trips: TripBatch, base_s: np.ndarray) -> Multipliers:
    pred = np.asarray(_design(trips, base_s, base_s.size).sum(axis=1)).ravel()
    f = float(np.median(trips.duration_s / pred))
    return _finish(np.ones(base_s.size), np.full(48, f), trips, base_s)


def class_least_squares(trips: TripBatch, base_s: np.ndarray, edge_class: np.ndarray) -> Multipliers:
    """``edge_class`` [E]: class index of each edge."""
    n_cls = int(edge_class.max()) + 1
    per_class = _design(trips, base_s, base_s.size) @ sp.csr_matrix(
        (np.ones(base_s.size), (np.arange(base_s.size), edge_class)), shape=(base_s.size, n_cls)
    )
    a = per_class.toarray() / trips.duration_s[:, None]  # relative errors: each trip weighs the same
    used = a.sum(axis=0) > 0
    coef = np.ones(n_cls)
    coef[used], _ = nnls(a[:, used], np.ones(len(trips)))
    coef[used] = np.maximum(coef[used], 0.05)
    fallback = float(np.median(coef[used]))
    coef[~used] = fallback
    edge = coef[edge_class]
    pred = np.asarray(_design(trips, base_s * edge, base_s.size).sum(axis=1)).ravel()
    hour = _hour_factors(trips.duration_s / pred, trips.minutes)
    return _finish(edge, hour, trips, base_s)


def edge_means(trips: TripBatch, base_s: np.ndarray, shrink_trips: float = 5.0) -> Multipliers:
    pred = np.asarray(_design(trips, base_s, base_s.size).sum(axis=1)).ravel()
    hour = _hour_factors(trips.duration_s / pred, trips.minutes)
    log_r = np.log(trips.duration_s / (pred * hour[_hour_key(trips.minutes)]))
    time_on = trips.share * base_s[trips.edge]
    weight = time_on / np.maximum(pred[trips.row], 1e-9)  # each trip's weight spread over its edges by time
    num = np.bincount(trips.edge, weights=weight * log_r[trips.row], minlength=base_s.size)
    den = np.bincount(trips.edge, weights=weight, minlength=base_s.size)
    edge = np.exp(num / (den + shrink_trips * np.mean(weight)))
    return _finish(edge, hour, trips, base_s)
