"""`routing bench backends`: throughput, parity and int8 quality of the inference backends.

All backends run side by side in one process on the same inputs (Euclidean problems with
and without windows, drawn with a fixed seed), with the same thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from gnn_model.backends import Backend, BackendUnavailable, FeatureBatch, load_backend
from gnn_model.features import GraphFeatures, build_features, local_scores
from gnn_model.search import SearchParams, solve, warm_up
from gnn_model.training import euclidean_problem, with_windows
from routing_core.problem import Problem

BATCHES = (1, 8, 32, 128)
SIZES = (20, 50, 100)


def problems(n: int, count: int, seed: int) -> list[Problem]:
    rng = np.random.default_rng(seed + n)
    out = []
    for i in range(count):
        p = euclidean_problem(n, rng, asymmetry=0.3 if i % 2 else 0.0)
        out.append(with_windows(p, rng) if i % 4 == 3 else p)
    return out


def _time_calls(fn: Callable[[], object], min_s: float, max_calls: int) -> list[float]:
    fn()  # warm
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_s and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(model_dir: Path, checkpoint: Path, names: list[str], threads: int, seed: int, min_s: float,
        log: Callable[[str], None]) -> dict[str, object]:  # fmt: skip
    warm_up()
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            backends[name] = load_backend(name, model_dir, checkpoint, threads=threads)
        except BackendUnavailable as exc:
            skipped[name] = str(exc)
    feats: dict[int, list[GraphFeatures]] = {}
    probs: dict[int, list[Problem]] = {}
    for n in SIZES:
        probs[n] = problems(n, max(BATCHES), seed)
        feats[n] = [build_features(p) for p in probs[n]]
    throughput = []
    for n in SIZES:
        for b in BATCHES:
            batch = FeatureBatch.of(feats[n][:b])
            for name, backend in backends.items():
                times = _time_calls(partial(backend.predict, batch), min_s, 2000)
                row = {"backend": name, "batch": b, "n_nodes": n,
                       "problems_per_s": round(b / float(np.mean(times)), 1),
                       "p50_ms": round(1000 * float(np.median(times)), 3)}  # fmt: skip
                throughput.append(row)
                log(
                    f"{name:18s} n={n:4d} batch={b:4d} {row['problems_per_s']:10.1f} problems/s  p50 {row['p50_ms']:8.3f} ms"
                )
    result: dict[str, object] = {"throughput": throughput, "threads": threads, "skipped": skipped}
    if "torch" in backends and "onnxruntime" in backends:
        diffs = []
        for n in SIZES:
            batch = FeatureBatch.of(feats[n][:32])
            ref = np.concatenate(backends["torch"].predict(batch))
            ort_out = np.concatenate(backends["onnxruntime"].predict(batch))
            diffs.append(float(np.abs(ref - ort_out).max()))
        result["parity_max_abs_diff"] = max(diffs)
    if "onnxruntime" in backends and "onnxruntime-int8" in backends:
        deltas = []
        params = SearchParams(time_limit_ms=1e9, max_iterations=300, seed=seed)
        for p, f in zip(probs[50][:64], feats[50][:64], strict=True):
            batch = FeatureBatch.of([f])
            costs = []
            for name in ("onnxruntime", "onnxruntime-int8"):
                scores = backends[name].predict(batch)[0]
                costs.append(solve(p, params, scores=local_scores(f, scores)).evaluation.travel_s)
            deltas.append(100.0 * (costs[1] / costs[0] - 1.0))
        result["int8_route_cost_delta_pct"] = float(np.mean(deltas))
        result["int8_route_cost_delta_max_pct"] = float(np.max(np.abs(deltas)))
    return result
