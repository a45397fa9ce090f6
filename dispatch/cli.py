"""``routing dispatch FILE``: plan a fleet for a benchmark file (Solomon VRPTW text, CVRPLIB ``.vrp``)
with the fleet solver, and print the plan, its check and, where the best known is given, the gap.

VROOM JSON comes with the HTTP API (``POST /v1/optimization``, issue 14); this command reads the
instance formats the benchmarks use.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dispatch.instances import Instance, read_instance
from dispatch.solver import solve_fleet
from routing_core import fleet as F


class DispatchError(ValueError):
    """Bad input; the message names the file or option."""


def instance_problem(inst: Instance) -> F.FleetProblem:
    """A benchmark instance as a fleet problem on its integer matrix (distance = travel time, the
    distance objective: every vehicle costs 1 per unit of distance, nothing per hour)."""
    matrix = inst.integer_matrix().astype(np.float64)
    ready, due, service = inst.integer_times()
    shift = F.TimeWindow(float(ready[0]), float(due[0]))
    vehicles = tuple(F.Vehicle(f"v{k + 1}", 0, 0, shift, (int(inst.capacity),), cost_per_hour=0.0, cost_per_km=1000.0)
                     for k in range(inst.n_vehicles))  # fmt: skip
    jobs = tuple(
        F.Job(str(i), i, service_s=float(service[i]), delivery=(int(inst.demand[i]),),
              windows=(F.TimeWindow(float(ready[i]), float(due[i])),) if inst.has_time_windows else ())
        for i in range(1, inst.n)
    )  # fmt: skip
    return F.FleetProblem(matrix, matrix, vehicles, jobs)


def add_arguments(sub: Any) -> None:
    p = sub.add_parser("dispatch", help="plan a fleet for a Solomon (.txt) or CVRPLIB (.vrp) file")
    p.add_argument("file")
    p.add_argument("--time-limit-ms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.time_limit_ms < 10:
        raise DispatchError("--time-limit-ms must be at least 10")
    path = Path(args.file)
    if not path.is_file():
        raise DispatchError(f"file not found: {path}")
    try:
        inst = read_instance(path)
    except ValueError as exc:
        raise DispatchError(str(exc)) from None
    problem = instance_problem(inst)
    result = solve_fleet(problem, args.time_limit_ms / 1000.0, seed=args.seed)
    ev = result.evaluation
    # The objective is distance: per-km cost 1000 on matrix units read as metres is 1 per unit.
    distance = float(ev.distance_m)
    gap = inst.gap_percent(distance)
    return {
        "instance": inst.name, "customers": inst.n_customers, "vehicles_available": inst.n_vehicles,
        "routes": [[int(s.id) for s in r.steps] for r in result.plan.routes],
        "vehicles_used": len(result.plan.routes), "distance": distance,
        "cost_bks_units": inst.to_bks_units(distance), "bks": inst.bks,
        "gap_percent": None if gap is None or math.isnan(gap) else round(gap, 3),
        "feasible": ev.feasible, "violations": sorted(ev.codes),
        "unassigned": {t: result.reasons.get(t, []) for t in result.plan.unassigned},
        "elapsed_ms": round(result.elapsed_s * 1000, 1),
    }  # fmt: skip


def format_text(out: dict[str, Any]) -> str:
    gap = "" if out["gap_percent"] is None else f", gap to best known {out['gap_percent']:.2f}%"
    lines = [f"{out['instance']}: {out['customers']} customers, {out['vehicles_used']} of {out['vehicles_available']} "
             f"vehicles, distance {out['cost_bks_units']:.2f}{gap}, "
             f"{'feasible' if out['feasible'] else 'INFEASIBLE ' + ','.join(out['violations'])}, "
             f"{len(out['unassigned'])} unassigned, {out['elapsed_ms']:.0f} ms"]  # fmt: skip
    lines += [f"  route {k + 1}: {' '.join(map(str, r))}" for k, r in enumerate(out["routes"])]
    lines += [f"  unassigned {t}: {', '.join(why)}" for t, why in out["unassigned"].items()]
    return "\n".join(lines)


def format_json(out: dict[str, Any]) -> str:
    return json.dumps(out)
