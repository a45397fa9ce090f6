"""Fleet dispatch peers on Solomon VRPTW (C1, R1) and CVRPLIB (Augerat A, P): gap to best known, time, feasibility.

Every solver gets the same integer matrix (``Instance.integer_matrix()``: round(1000 x euclid)
for Solomon, with times scaled alike; TSPLIB nint(euclid) for CVRPLIB) and the same fleet
(Solomon: its 25 vehicles; CVRPLIB: the k of the name). Each answer is checked here with
``dispatch.instances.check_solution`` (each customer once, capacity, time windows with waiting,
depot closing time, routes <= vehicles) and its cost recomputed on the matrix before it counts.
Solomon gaps compare cost / 1000 with the best known distance (on unrounded euclid).

Solvers live in the ``SOLVERS`` registry: ``name -> Solver(fn, budgets)`` with
``fn(instance, time_limit_s) -> SolveResult(cost, routes, elapsed_s, feasible)``; a budget of
``None`` means the solver runs to its own end (VROOM's exploration levels).

    python -m bench.dispatch            # --quick: 3 Solomon + 3 CVRPLIB, 1 s budgets (a few minutes)
    python -m bench.dispatch --full     # C1+R1 and all of A+P, 1 s and 10 s budgets
    python -m bench.dispatch --full --families solomon --budgets 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bench.common import REPO, git_info, machine_info, versions
from dispatch.instances import Instance, check_solution, cvrplib_paths, read_instance, route_cost, solomon_paths

SHARED = REPO.parent / "shared" / "data" / "benchmarks"
RESULTS = REPO / "bench" / "results"
QUICK_SOLOMON = ("C101", "R101", "R105")
QUICK_CVRP = ("A-n32-k5", "A-n80-k10", "P-n50-k7")


class SolveResult(NamedTuple):
    cost: float | None  # the solver's own cost on the integer matrix (None when it found nothing)
    routes: list[list[int]]  # customer node indices, depot left out
    elapsed_s: float  # wall time of the call: model building and solving
    feasible: bool  # the solver's own verdict (the bench checks independently)


SolveFn = Callable[[Instance, "float | None"], SolveResult]


@dataclass(frozen=True)
class Solver:
    fn: SolveFn
    budgets: tuple[float | None, ...]  # time limits (s) it runs at; None: no limit (own stopping rule)
    family: str  # "peer" or "ours"


SOLVERS: dict[str, Solver] = {}


def register(name: str, budgets: tuple[float | None, ...], family: str = "peer") -> Callable[[SolveFn], SolveFn]:
    def deco(fn: SolveFn) -> SolveFn:
        SOLVERS[name] = Solver(fn, budgets, family)
        return fn

    return deco


# --------------------------------------------------------------------------- PyVRP


def solve_pyvrp(instance: Instance, time_limit_s: float | None) -> SolveResult:
    import pyvrp
    import pyvrp.stop

    t0 = time.perf_counter()
    matrix = instance.integer_matrix()
    ready, due, service = instance.integer_times()
    m = pyvrp.Model()
    locs = [m.add_location(float(x), float(y)) for x, y in instance.coords]
    depot = m.add_depot(locs[0], tw_early=int(ready[0]), tw_late=int(due[0]))
    m.add_vehicle_type(
        num_available=instance.n_vehicles,
        capacity=instance.capacity,
        start_depot=depot,
        end_depot=depot,
        tw_early=int(ready[0]),
        tw_late=int(due[0]),
    )
    for i in range(1, instance.n):
        m.add_client(
            locs[i],
            delivery=int(instance.demand[i]),
            service_duration=int(service[i]),
            tw_early=int(ready[i]),
            tw_late=int(due[i]),
        )
    for i in range(instance.n):
        for j in range(instance.n):
            if i != j:
                d = int(matrix[i, j])
                m.add_edge(locs[i], locs[j], distance=d, duration=d)
    limit = 10.0 if time_limit_s is None else time_limit_s
    res = m.solve(stop=pyvrp.stop.MaxRuntime(limit), seed=0, display=False)
    elapsed = time.perf_counter() - t0
    # Activities carry the client's index among clients (0-based); clients were added in node order 1..n-1.
    routes = [[int(a.idx) + 1 for a in route if a.is_client()] for route in res.best.routes()]
    return SolveResult(float(res.best.distance()), routes, elapsed, bool(res.is_feasible()))


register("pyvrp", (1.0, 10.0))(solve_pyvrp)


# --------------------------------------------------------------------------- VROOM


def solve_vroom(instance: Instance, exploration: int) -> SolveResult:
    import vroom

    t0 = time.perf_counter()
    matrix = instance.integer_matrix()
    ready, due, service = instance.integer_times()
    problem = vroom.Input()
    problem.set_durations_matrix(profile="car", matrix_input=matrix.astype(np.uint32))
    for k in range(instance.n_vehicles):
        problem.add_vehicle(
            vroom.Vehicle(
                k,
                start=0,
                end=0,
                capacity=[instance.capacity],
                time_window=vroom.TimeWindow(int(ready[0]), int(due[0])),
            )
        )
    for i in range(1, instance.n):
        job_kwargs: dict[str, Any] = {
            "location": i,
            "default_service": int(service[i]),
            "delivery": vroom.Amount([int(instance.demand[i])]),
        }
        if instance.has_time_windows:
            job_kwargs["time_windows"] = [vroom.TimeWindow(int(ready[i]), int(due[i]))]
        problem.add_job(vroom.Job(i, **job_kwargs))
    sol = problem.solve(exploration_level=exploration, nb_threads=2)
    elapsed = time.perf_counter() - t0
    df = sol.routes
    jobs = df[df["type"] == "job"]
    routes = [[int(j) for j in grp["id"]] for _, grp in jobs.groupby("vehicle_id", sort=True)]
    unassigned = len(sol.unassigned) if hasattr(sol, "unassigned") else 0
    cost = float(sol.summary.cost)
    return SolveResult(cost, routes, elapsed, unassigned == 0)


def _vroom_at(exploration: int) -> SolveFn:
    def fn(instance: Instance, time_limit_s: float | None) -> SolveResult:
        return solve_vroom(instance, exploration)  # runs to its own end: the level is its budget

    return fn


for _x in (0, 2, 5):
    register(f"vroom-x{_x}", (None,))(_vroom_at(_x))


# --------------------------------------------------------------------------- OR-Tools


# PATH_CHEAPEST_ARC (the tutorials' default) finds no first solution on R101/R105 within 1 s; of
# PARALLEL_CHEAPEST_INSERTION, SAVINGS, AUTOMATIC and this one, this was best on C101/R101/R105.
ORTOOLS_FIRST_SOLUTION = "LOCAL_CHEAPEST_INSERTION"


def solve_ortools(instance: Instance, time_limit_s: float | None) -> SolveResult:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    t0 = time.perf_counter()
    matrix = instance.integer_matrix()
    ready, due, service = instance.integer_times()
    n, k = instance.n, instance.n_vehicles
    mat = matrix.tolist()
    srv = service.tolist()
    dem = instance.demand.tolist()
    manager = pywrapcp.RoutingIndexManager(n, k, 0)
    routing = pywrapcp.RoutingModel(manager)

    def dist_cb(a: int, b: int) -> int:
        return int(mat[manager.IndexToNode(a)][manager.IndexToNode(b)])

    def time_cb(a: int, b: int) -> int:
        i, j = manager.IndexToNode(a), manager.IndexToNode(b)
        return int(mat[i][j] + srv[i])

    def demand_cb(a: int) -> int:
        return int(dem[manager.IndexToNode(a)])

    dist_idx = routing.RegisterTransitCallback(dist_cb)
    routing.SetArcCostEvaluatorOfAllVehicles(dist_idx)
    dem_idx = routing.RegisterUnaryTransitCallback(demand_cb)
    routing.AddDimensionWithVehicleCapacity(dem_idx, 0, [instance.capacity] * k, True, "load")
    if instance.has_time_windows:
        horizon = int(due[0])
        time_idx = routing.RegisterTransitCallback(time_cb)
        routing.AddDimension(time_idx, horizon, horizon, False, "time")
        tdim = routing.GetDimensionOrDie("time")
        for node in range(1, n):
            tdim.CumulVar(manager.NodeToIndex(node)).SetRange(int(ready[node]), int(due[node]))
        for v in range(k):
            tdim.CumulVar(routing.Start(v)).SetRange(int(ready[0]), int(due[0]))
            tdim.CumulVar(routing.End(v)).SetRange(int(ready[0]), int(due[0]))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = getattr(routing_enums_pb2.FirstSolutionStrategy, ORTOOLS_FIRST_SOLUTION)
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    limit = 1.0 if time_limit_s is None else time_limit_s
    params.time_limit.FromMilliseconds(max(1, round(limit * 1000)))
    sol = routing.SolveWithParameters(params)
    elapsed = time.perf_counter() - t0
    if sol is None:
        return SolveResult(None, [], elapsed, False)
    routes: list[list[int]] = []
    for v in range(k):
        idx = routing.Start(v)
        route: list[int] = []
        idx = sol.Value(routing.NextVar(idx))
        while not routing.IsEnd(idx):
            route.append(manager.IndexToNode(idx))
            idx = sol.Value(routing.NextVar(idx))
        if route:
            routes.append(route)
    return SolveResult(float(sol.ObjectiveValue()), routes, elapsed, True)


register("ortools-gls", (1.0,))(solve_ortools)


# --------------------------------------------------------------------------- running


def load_instances(full: bool, families: tuple[str, ...]) -> list[tuple[str, Instance]]:
    """(family, instance) pairs: family is solomon-C1, solomon-R1, cvrp-A or cvrp-P."""
    out: list[tuple[str, Instance]] = []
    if "solomon" in families:
        for p in solomon_paths(SHARED / "solomon_vrptw"):
            if full or p.stem in QUICK_SOLOMON:
                out.append((f"solomon-{p.stem[:2]}", read_instance(p)))
    if "cvrp" in families:
        for p in cvrplib_paths(SHARED / "cvrplib"):
            if full or p.stem in QUICK_CVRP:
                out.append((f"cvrp-{p.parent.name}", read_instance(p)))
    return out


def run_one(family: str, instance: Instance, solver: str, budget: float | None) -> dict[str, Any]:
    matrix = instance.integer_matrix()
    row: dict[str, Any] = {"family": family, "instance": instance.name, "solver": solver, "budget_s": budget}
    try:
        res = SOLVERS[solver].fn(instance, budget)
    except Exception as e:  # a peer crashing is a result, not the end of the run
        row.update(error=f"{type(e).__name__}: {e}", feasible=False, cost=None, gap_pct=None, elapsed_s=None)
        return row
    problems = check_solution(instance, res.routes, matrix)
    cost = route_cost(res.routes, matrix)
    feasible = not problems
    row.update(
        elapsed_s=round(res.elapsed_s, 3),
        solver_feasible=res.feasible,
        feasible=feasible,
        problems=problems[:5],
        cost=cost,
        solver_cost=res.cost,
        cost_matches_solver=res.cost is not None and abs(res.cost - cost) < 0.5,
        routes=len([r for r in res.routes if r]),
        bks=instance.bks,
        gap_pct=round(g, 3) if feasible and (g := instance.gap_percent(cost)) is not None else None,
    )
    return row


def label(solver: str, budget: float | None) -> str:
    return solver if budget is None else f"{solver} {budget:g}s"


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["family"], label(r["solver"], r["budget_s"])), []).append(r)
    out = []
    for (family, lab), rs in sorted(groups.items()):
        gaps = [r["gap_pct"] for r in rs if r.get("gap_pct") is not None]
        times = [r["elapsed_s"] for r in rs if r.get("elapsed_s") is not None]
        out.append(
            {
                "family": family,
                "solver": lab,
                "instances": len(rs),
                "feasible": sum(1 for r in rs if r.get("feasible")),
                "mean_gap_pct": round(statistics.fmean(gaps), 2) if gaps else None,
                "max_gap_pct": round(max(gaps), 2) if gaps else None,
                "mean_time_s": round(statistics.fmean(times), 2) if times else None,
            }
        )
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| family | solver | feasible | mean gap % | max gap % | mean time s |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        gap = "-" if s["mean_gap_pct"] is None else f"{s['mean_gap_pct']:.2f}"
        mx = "-" if s["max_gap_pct"] is None else f"{s['max_gap_pct']:.2f}"
        t = "-" if s["mean_time_s"] is None else f"{s['mean_time_s']:.2f}"
        lines.append(f"| {s['family']} | {s['solver']} | {s['feasible']}/{s['instances']} | {gap} | {mx} | {t} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 Solomon + 3 CVRPLIB at 1 s budgets (default)")
    mode.add_argument("--full", action="store_true", help="Solomon C1+R1, CVRPLIB A+P, every budget")
    ap.add_argument("--families", default="solomon,cvrp", help="comma list of solomon, cvrp")
    ap.add_argument("--solvers", default=",".join(SOLVERS), help=f"comma list of {', '.join(SOLVERS)}")
    ap.add_argument(
        "--budgets", default=None, help="comma list of time limits (s) to keep, e.g. 1 (default: quick 1, full all)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown:
        ap.error(f"unknown solvers {unknown}; known: {list(SOLVERS)}")
    keep: set[float] | None = {float(b) for b in args.budgets.split(",")} if args.budgets else None
    if keep is None and not args.full:
        keep = {1.0}
    instances = load_instances(args.full, families)
    if not instances:
        print(f"no instances found under {SHARED}", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    for family, inst in instances:
        for name in solvers:
            for budget in SOLVERS[name].budgets:
                if budget is not None and keep is not None and budget not in keep:
                    continue
                row = run_one(family, inst, name, budget)
                rows.append(row)
                print(
                    f"{inst.name:10s} {label(name, budget):16s} cost={row.get('cost')} gap={row.get('gap_pct')}% "
                    f"t={row.get('elapsed_s')}s feasible={row.get('feasible')} {row.get('error', '')}",
                    flush=True,
                )
    summary = summarise(rows)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    report = {
        "bench": "dispatch-peers",
        "mode": "full" if args.full else "quick",
        "started_utc": started.isoformat(),
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "conventions": {
            "solomon": "matrix round(1000 x euclid), times x1000; gap = (cost/1000 - BKS_distance) / BKS_distance",
            "cvrp": "matrix nint(euclid) (TSPLIB EUC_2D); gap = (cost - BKS) / BKS; fleet = k of the name",
        },
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "machine": machine_info(),
        "versions": versions(["pyvrp", "pyvroom", "ortools", "numpy"]),
        "git": git_info(),
        "summary": summary,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    (args.out / f"dispatch-peers-{stamp}.json").write_text(text)
    (args.out / "dispatch-peers-latest.json").write_text(text)
    print()
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; versions {report['versions']}")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
