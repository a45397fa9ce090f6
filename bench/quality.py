"""Route quality and time: our search (GNN-guided and k-nearest-guided) against the optimum.

Side by side in one run, one core:

* TSPLIB: the 19 instances of ../shared/data/benchmarks/tsplib, gap to the proven optimum;
* road problems: N per size n on real maps (travel-time matrices from graph_store), gap to
  LKH (elkai, non-commercial licence: a benchmark reference only) on the same matrix;
* time windows (n = 20, 50): share solved feasible, gap to PyVRP's label.

Methods: ``gnn`` (candidates and construction from the trained model, model time counted
in the budget), ``knn`` (the same search, k-nearest candidates), ``nn`` (nearest
neighbour), ``ortools`` (OR-Tools guided local search at the same budget), ``lkh``.

    .venv/bin/python bench/quality.py [--road-count 100] [--quick]

Prints tables, writes bench/results/quality-<stamp>.json and quality-latest.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gnn_model.features import build_features, local_scores  # noqa: E402
from gnn_model.labels import pyvrp_order  # noqa: E402
from gnn_model.policy import torch_scorer  # noqa: E402
from gnn_model.search import SearchParams, nearest_neighbour, solve, warm_up  # noqa: E402
from gnn_model.training import euclidean_problem, load_checkpoint, with_windows  # noqa: E402
from routing_core.problem import Problem, evaluate  # noqa: E402
from routing_core.problem_io import read_tsplib  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
# (problem, budget ms, seed) -> (order or None when no route was found in the budget, ms)
Solver = Callable[[Problem, float, int], tuple[tuple[int, ...] | None, float]]


def run_ours(scorer: Callable | None) -> Solver:
    def run(problem: Problem, budget_ms: float, seed: int) -> tuple[tuple[int, ...], float]:
        t0 = time.perf_counter()
        scores = None
        if scorer is not None:
            feats = build_features(problem)
            scores = local_scores(feats, scorer(feats))
        spent = (time.perf_counter() - t0) * 1e3
        res = solve(problem, SearchParams(time_limit_ms=max(0.0, budget_ms - spent), seed=seed), scores=scores)
        return res.order, (time.perf_counter() - t0) * 1e3

    return run


def run_nn(problem: Problem, budget_ms: float, seed: int) -> tuple[tuple[int, ...], float]:
    res = nearest_neighbour(problem)
    return res.order, res.elapsed_ms


def run_ortools(problem: Problem, budget_ms: float, seed: int) -> tuple[tuple[int, ...] | None, float]:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    t0 = time.perf_counter()
    n = problem.n_nodes
    mat = np.round(np.minimum(problem.matrix, 1e7) * 10).astype(np.int64)
    manager = pywrapcp.RoutingIndexManager(n, 1, problem.start)
    routing = pywrapcp.RoutingModel(manager)

    def cost(i: int, j: int) -> int:
        return int(mat[manager.IndexToNode(i), manager.IndexToNode(j)])

    cb = routing.RegisterTransitCallback(cost)
    routing.SetArcCostEvaluatorOfAllVehicles(cb)
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(int(budget_ms))
    sol = routing.SolveWithParameters(params)
    if sol is None:  # no first solution within the budget (large instances)
        return None, (time.perf_counter() - t0) * 1e3
    order = []
    idx = routing.Start(0)
    while not routing.IsEnd(idx):
        node = manager.IndexToNode(idx)
        if node != problem.start:
            order.append(node)
        idx = sol.Value(routing.NextVar(idx))
    return tuple(order), (time.perf_counter() - t0) * 1e3


def run_lkh(problem: Problem, budget_ms: float, seed: int) -> tuple[tuple[int, ...], float]:
    import elkai

    t0 = time.perf_counter()
    mat = np.round(np.minimum(problem.matrix, 1e7) * 10).astype(np.int64)
    tour = elkai.DistanceMatrix(mat.tolist()).solve_tsp(runs=1)
    i = tour.index(problem.start)
    rot = tour[i:-1] + tour[:i] if tour[-1] == tour[0] else tour[i:] + tour[:i]
    return tuple(int(x) for x in rot[1:]), (time.perf_counter() - t0) * 1e3


def summarise(gaps: list[float], times: list[float]) -> dict[str, float]:
    return {
        "mean_gap_pct": float(np.mean(gaps)), "max_gap_pct": float(np.max(gaps)),
        "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)), "count": len(gaps),
    }  # fmt: skip


def bench_tsplib(methods: dict[str, Solver], quick: bool) -> dict[str, object]:
    folder = SHARED / "benchmarks" / "tsplib"
    optima = {
        r["instance"]: int(r["optimal_length"])
        for r in csv.DictReader((folder / "optima.csv").read_text().splitlines())
    }
    per_instance = []
    groups: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for name in sorted(optima, key=lambda k: int(optima[k])):
        problem = read_tsplib(folder / f"{name}.tsp")
        n = problem.n_nodes
        if quick and n > 200:
            continue
        budget = 100.0 if n <= 200 else 1000.0
        group = "n<=200 @100ms" if n <= 200 else ("200<n<=1000 @1s" if n <= 1000 else "n>1000 @1s")
        row: dict[str, object] = {"instance": name, "n": n, "budget_ms": budget}
        for m, fn in methods.items():
            if m == "lkh":
                continue
            order, ms = fn(problem, budget, 0)
            if order is None:
                row[m] = {"gap_pct": None, "ms": round(ms, 1), "note": "no route within the budget"}
                continue
            gap = 100.0 * (evaluate(problem, order).travel_s / optima[name] - 1.0)
            row[m] = {"gap_pct": round(gap, 3), "ms": round(ms, 1)}
            g, t = groups.setdefault(group, {}).setdefault(m, ([], []))
            g.append(gap)
            t.append(ms)
        per_instance.append(row)
        print(
            f"  tsplib {name:9s} n={n:5d} "
            + " ".join(f"{m}={row[m]['gap_pct']}%/{row[m]['ms']:.0f}ms" for m in methods if m in row),
            flush=True,
        )  # type: ignore[index]
    return {"instances": per_instance,
            "summary": {g: {m: summarise(*v) for m, v in ms.items()} for g, ms in groups.items()}}  # fmt: skip


def road_snapshots() -> list[object]:
    import pyrosm

    from graph_store.osm_import import read_osm
    from graph_store.routing_graph import RoadGraph, RoutingSnapshot
    from graph_store.traffic import TrafficState

    paths = [Path(pyrosm.get_data("helsinki_pbf"))]
    paths += [SHARED / "road_networks" / f for f in ("manhattan_midtown.osm.pbf", "baltimore.osm.pbf")]
    return [RoutingSnapshot(RoadGraph(read_osm(p), name=p.name), TrafficState()) for p in paths]


def bench_road(methods: dict[str, Solver], sizes: list[int], count: int, seed: int) -> dict[str, object]:
    from graph_store.problem_sampling import sample_road_problem

    snaps = road_snapshots()
    when = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    rng = np.random.default_rng(seed + 1000)  # not the training seed's stream
    out: dict[str, object] = {}
    for n in sizes:
        budget = 50.0 if n <= 100 else 100.0
        res: dict[str, tuple[list[float], list[float]]] = {}
        for i in range(count):
            snap = snaps[i % len(snaps)]
            problem = sample_road_problem(snap, n, rng, when)  # type: ignore[arg-type]
            ref_order, ref_ms = run_lkh(problem, 0, 0)
            ref = evaluate(problem, ref_order).travel_s
            res.setdefault("lkh", ([], []))[0].append(0.0)
            res["lkh"][1].append(ref_ms)
            for m, fn in methods.items():
                if m == "lkh":
                    continue
                order, ms = fn(problem, budget, i)
                if order is None:
                    continue
                gap = 100.0 * (evaluate(problem, order).travel_s / ref - 1.0)
                res.setdefault(m, ([], []))[0].append(gap)
                res[m][1].append(ms)
        out[f"n={n} @{budget:.0f}ms"] = {m: summarise(*v) for m, v in res.items()}
        print(f"  road n={n}: " + " ".join(f"{m}={np.mean(v[0]):.2f}%" for m, v in res.items()), flush=True)
    return out


def bench_windows(methods: dict[str, Solver], sizes: list[int], count: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed + 2000)
    out: dict[str, object] = {}
    for n in sizes:
        budget = 50.0
        res: dict[str, dict[str, list[float]]] = {}
        for i in range(count):
            problem = with_windows(euclidean_problem(n, rng, asymmetry=0.3), rng)
            label = evaluate(problem, pyvrp_order(problem, max_iterations=1000, seed=i))
            for m, fn in methods.items():
                if m in ("lkh", "ortools"):
                    continue  # no windows in these baselines as run here
                order, ms = fn(problem, budget, i)
                if order is None:
                    continue
                ev = evaluate(problem, order)
                r = res.setdefault(m, {"feasible": [], "gap": [], "ms": []})
                r["feasible"].append(float(ev.feasible))
                r["ms"].append(ms)
                if ev.feasible and label.feasible:
                    r["gap"].append(100.0 * (ev.travel_s / label.travel_s - 1.0))
        out[f"n={n} @{budget:.0f}ms"] = {
            m: {"feasible_share": float(np.mean(r["feasible"])), "mean_gap_vs_pyvrp_pct": float(np.mean(r["gap"])) if r["gap"] else math.nan,
                "median_ms": float(np.median(r["ms"])), "count": len(r["ms"])}
            for m, r in res.items()
        }  # fmt: skip
        print(
            f"  windows n={n}: "
            + " ".join(f"{m}={np.mean(r['feasible']) * 100:.0f}% feasible" for m, r in res.items()),
            flush=True,
        )
    return out


def print_table(title: str, table: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    for group, rows in table.items():
        for m, s in rows.items():
            cells = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items())
            print(f"  {group:18s} {m:8s} {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--road-count", type=int, default=100)
    parser.add_argument("--tw-count", type=int, default=100)
    parser.add_argument("--sizes", default="20,50,100,200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few problems, small TSPLIB only")
    parser.add_argument("--model", default=str(REPO / "gnn_model" / "artifacts" / "edge_scorer.pt"))
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"reference data not found at {SHARED}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    warm_up()
    methods: dict[str, Solver] = {}
    model_version = None
    if Path(args.model).is_file():
        model, meta = load_checkpoint(Path(args.model))
        model_version = meta["version"]
        methods["gnn"] = run_ours(torch_scorer(model))
    else:
        print(f"note: no model at {args.model}: the gnn rows are skipped", file=sys.stderr)
    methods.update({"knn": run_ours(None), "nn": run_nn, "ortools": run_ortools, "lkh": run_lkh})
    count = 5 if args.quick else args.road_count
    tw_count = 5 if args.quick else args.tw_count
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    report = {
        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "threads": 1},
        "model_version": model_version,
        "tsplib": bench_tsplib(methods, args.quick),
        "road": bench_road(methods, sizes, count, args.seed),
        "windows": bench_windows(methods, [20, 50], tw_count, args.seed),
    }
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print_table("TSPLIB (gap to optimum)", report["tsplib"]["summary"])  # type: ignore[index]
    print_table("Road problems (gap to LKH)", report["road"])  # type: ignore[arg-type]
    print_table("Time windows (vs PyVRP label)", report["windows"])  # type: ignore[arg-type]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = "quality-quick" if args.quick else "quality"
    text = json.dumps(report, indent=1, default=float)
    (RESULTS / f"{name}-{stamp}.json").write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    print(f"\nwrote {RESULTS / f'{name}-latest.json'} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
