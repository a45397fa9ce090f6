"""`routing bench backends`: throughput, parity and int8 quality of the inference backends.

All backends run side by side in one process on the same inputs (Euclidean problems with
and without windows, drawn with a fixed seed), with the same thread count. For each
(size, batch) the backends take turns of a few calls each (see ``_time_rounds``), so load
from other processes on a shared machine falls on all of them alike; ``problems_per_s``
is the batch size over the median call time, ``p50_ms`` that median, and ``cpu_ms_p50`` the median
CPU time of this process per call (all its threads): on a machine shared with other
work, CPU time is not inflated by waiting for a core, so its ratios are the steadier ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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


def _time_rounds(fns: dict[str, Callable[[], object]], min_s: float,
                 max_rounds: int) -> dict[str, tuple[list[float], list[float]]]:  # fmt: skip
    """(wall, CPU) seconds per call per name; the names take turns, ~``min_s`` of timed calls each in all.

    Each turn starts with one untimed call: the first call after another backend's pays for
    the caches and memory that backend left behind (measured: up to a third more for ONNX
    Runtime after torch on a batch of 32 100-node problems), which is not its own cost.
    """
    for fn in fns.values():
        fn()  # warm
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    turn_s = max(min_s / 8, 0.05)
    start = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - start < 1.5 * min_s * len(fns) and rounds < max_rounds):
        for name, fn in fns.items():
            fn()
            turn = time.perf_counter()
            while True:
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[name][0].append(time.perf_counter() - t0)
                times[name][1].append(time.process_time() - c0)
                if time.perf_counter() - turn >= turn_s:
                    break
        rounds += 1
    return times


def goal_ratios(throughput: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The issue's ratios per problem size, from wall time and from CPU time.

    ``onnxruntime_vs_torch`` and ``int8_vs_fp32``: throughput ratios at batch 32 (goals >= 2 and >= 1.3);
    ``batch32_cost_vs_batch1[backend]``: cost per problem at batch 32 over that at batch 1 (goal <= 0.25).
    """
    wall: dict[tuple[str, int, int], float] = {}
    cpu: dict[tuple[str, int, int], float] = {}
    for r in throughput:
        key = (str(r["backend"]), int(r["n_nodes"]), int(r["batch"]))
        wall[key] = float(r["p50_ms"]) / int(r["batch"])
        cpu[key] = float(r["cpu_ms_p50"]) / int(r["batch"])
    out: dict[str, dict[str, float]] = {}
    for basis, per_problem in (("wall", wall), ("cpu", cpu)):
        for n in SIZES:
            ratios: dict[str, float] = {}
            pairs = (
                ("onnxruntime_vs_torch", "torch", "onnxruntime"),
                ("int8_vs_fp32", "onnxruntime", "onnxruntime-int8"),
            )
            for label, slow, fast in pairs:
                if (slow, n, 32) in per_problem and (fast, n, 32) in per_problem:
                    ratios[label] = round(per_problem[(slow, n, 32)] / per_problem[(fast, n, 32)], 2)
            for name in sorted({k[0] for k in per_problem}):
                if (name, n, 1) in per_problem and (name, n, 32) in per_problem:
                    ratios[f"batch32_cost_vs_batch1[{name}]"] = round(
                        per_problem[(name, n, 32)] / per_problem[(name, n, 1)], 2
                    )
            out[f"{basis} n={n}"] = ratios
    return out


def run(model_dir: Path, checkpoint: Path, names: list[str], threads: int, seed: int, min_s: float,
        log: Callable[[str], None]) -> dict[str, object]:  # fmt: skip
    warm_up()
    load_before = os.getloadavg()[0]
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
    throughput: list[dict[str, Any]] = []
    for n in SIZES:
        for b in BATCHES:
            batch = FeatureBatch.of(feats[n][:b])
            timed = _time_rounds({name: partial(backend.predict, batch) for name, backend in backends.items()},
                                 min_s, 2000)  # fmt: skip
            for name, (wall, cpu) in timed.items():
                p50 = float(np.median(wall))
                row = {"backend": name, "batch": b, "n_nodes": n, "problems_per_s": round(b / p50, 1),
                       "p50_ms": round(1000 * p50, 3), "cpu_ms_p50": round(1000 * float(np.median(cpu)), 3)}  # fmt: skip
                throughput.append(row)
                log(f"{name:18s} n={n:4d} batch={b:4d} {row['problems_per_s']:10.1f} problems/s  "
                    f"p50 {row['p50_ms']:8.3f} ms  cpu {row['cpu_ms_p50']:8.3f} ms")  # fmt: skip
    result_goals = goal_ratios(throughput)
    # The machine's 1-minute load average before and after the timings (others' processes count).
    result: dict[str, object] = {"throughput": throughput, "threads": threads, "skipped": skipped,
                                 "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                                 "goal_ratios": result_goals}  # fmt: skip
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
        logit_diff = 0.0
        params = SearchParams(time_limit_ms=1e9, max_iterations=300, seed=seed)
        for p, f in zip(probs[50][:64], feats[50][:64], strict=True):
            batch = FeatureBatch.of([f])
            costs = []
            outs = [backends[name].predict(batch)[0] for name in ("onnxruntime", "onnxruntime-int8")]
            logit_diff = max(logit_diff, float(np.abs(outs[0] - outs[1]).max()))
            for scores in outs:
                costs.append(solve(p, params, scores=local_scores(f, scores)).evaluation.travel_s)
            deltas.append(100.0 * (costs[1] / costs[0] - 1.0))
        # The search may find the same routes from slightly different scores: the logits' gap says how far apart.
        result["int8_max_abs_logit_diff"] = logit_diff
        result["int8_route_cost_delta_pct"] = float(np.mean(deltas))
        result["int8_route_cost_delta_max_pct"] = float(np.max(np.abs(deltas)))
    return result
