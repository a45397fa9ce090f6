"""Scores of predicted trip durations against real ones: MAPE, median APE, MAE, bias, interval coverage."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

LENGTH_BINS_M = (0.0, 1000.0, 2000.0, 4000.0, float("inf"))
HOUR_BINS = ((0, 6, "00-06"), (6, 10, "06-10"), (10, 16, "10-16"), (16, 20, "16-20"), (20, 24, "20-24"))


def scores(pred: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """``pred`` [N] (median) or [N, 3] (p10, p50, p90) seconds against ``actual`` [N] seconds."""
    pred = np.asarray(pred, dtype=np.float64)
    mid = pred[:, 1] if pred.ndim == 2 else pred
    ape = np.abs(mid - actual) / actual
    out: dict[str, Any] = {
        "trips": int(actual.size),
        "mape": round(float(ape.mean()), 4),
        "median_ape": round(float(np.median(ape)), 4),
        "mae_s": round(float(np.abs(mid - actual).mean()), 1),
        "bias": round(float(np.median(mid / actual)), 4),
    }
    if pred.ndim == 2:
        out["p10_p90_coverage"] = round(float(np.mean((actual >= pred[:, 0]) & (actual <= pred[:, 2]))), 4)
    return out


def breakdown(pred: np.ndarray, actual: np.ndarray, route_m: np.ndarray, hour: np.ndarray) -> dict[str, Any]:
    """``scores`` by trip length (route metres) and by hour of the pickup."""
    out: dict[str, Any] = {"by_length_m": {}, "by_hour": {}}
    for lo, hi in itertools.pairwise(LENGTH_BINS_M):
        m = (route_m >= lo) & (route_m < hi)
        if m.any():
            out["by_length_m"][f"{int(lo)}-{'' if hi == float('inf') else int(hi)}"] = scores(pred[m], actual[m])
    for lo, hi, name in HOUR_BINS:
        m = (hour >= lo) & (hour < hi)
        if m.any():
            out["by_hour"][name] = scores(pred[m], actual[m])
    return out
