"""Benchmark instances for fleet dispatch: Solomon VRPTW and CVRPLIB (Augerat A/P) readers.

Both formats load into one plain :class:`Instance` (depot at index 0). Solvers and the
bench work on integer matrices, so that every peer sees exactly the same numbers:

* **Solomon VRPTW** (``kind="vrptw"``): ``integer_matrix()`` is ``round(1000 x euclid)``
  (the issue's convention) and times are scaled by the same 1000 (Solomon's ready, due and
  service times are integers, so they stay exact). Travel time equals distance. The best
  known distances (``VRPTW_BKS.json``, key ``NAME_distance``) are on *unrounded* euclidean
  distances: compare ``cost / 1000`` against them (:meth:`Instance.to_bks_units`).
* **CVRPLIB** (``kind="cvrp"``): ``integer_matrix()`` is TSPLIB EUC_2D ``nint(euclid)``
  (scale 1), the distances the best knowns (``bks_summary.csv``, ``.sol`` "Cost") are on,
  so the cost compares as is. No time windows (``ready`` 0, ``due`` infinite).

:func:`check_solution` is an independent feasibility check of a set of routes (every
customer exactly once, capacity, time windows with waiting allowed, depot closing time,
number of routes); the bench counts no cost that it has not passed.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Kind = Literal["vrptw", "cvrp"]

SOLOMON_SCALE = 1000
CVRP_SCALE = 1


@dataclass
class Instance:
    """One benchmark instance; arrays are indexed by node, depot first."""

    name: str
    kind: Kind
    coords: np.ndarray  # [n, 2] float
    demand: np.ndarray  # [n] int, depot 0
    capacity: int
    n_vehicles: int
    ready: np.ndarray  # [n] float, instance units
    due: np.ndarray  # [n] float, instance units (inf: no window)
    service: np.ndarray  # [n] float, instance units
    bks: float | None = None
    source: str = field(default="", compare=False)

    @property
    def n(self) -> int:
        """Number of nodes, depot included."""
        return int(self.coords.shape[0])

    @property
    def n_customers(self) -> int:
        return self.n - 1

    @property
    def scale(self) -> int:
        """The default integer scale of this kind: 1000 for Solomon, 1 (nint) for CVRPLIB."""
        return SOLOMON_SCALE if self.kind == "vrptw" else CVRP_SCALE

    @property
    def has_time_windows(self) -> bool:
        return self.kind == "vrptw"

    def euclid(self) -> np.ndarray:
        diff = self.coords[:, None, :] - self.coords[None, :, :]
        return np.sqrt((diff**2).sum(axis=-1))

    def integer_matrix(self, scale: int | None = None) -> np.ndarray:
        """Symmetric int64 distance (= travel time) matrix: ``floor(scale x euclid + 0.5)``.

        ``scale`` defaults to :attr:`scale` (1000 for Solomon, 1 for CVRPLIB: TSPLIB nint).
        Rounding is half up, as TSPLIB's ``nint``.
        """
        s = self.scale if scale is None else scale
        return np.floor(self.euclid() * s + 0.5).astype(np.int64)

    def integer_times(self, scale: int | None = None, horizon: int | None = None) -> tuple[np.ndarray, ...]:
        """``(ready, due, service)`` as int64 in the units of ``integer_matrix(scale)``.

        An infinite due time (CVRPLIB) becomes ``horizon`` (default: a bound no route reaches).
        """
        s = self.scale if scale is None else scale
        if horizon is None:
            horizon = int(self.integer_matrix(s).sum()) + int(np.ceil(self.service.sum() * s)) + 1
        due = np.where(np.isfinite(self.due), self.due * s, horizon)
        ready = np.rint(self.ready * s).astype(np.int64)
        service = np.rint(self.service * s).astype(np.int64)
        return ready, np.rint(due).astype(np.int64), service

    def to_bks_units(self, cost: float, scale: int | None = None) -> float:
        """A cost on ``integer_matrix(scale)`` in the units of :attr:`bks`."""
        s = self.scale if scale is None else scale
        return cost / s

    def gap_percent(self, cost: float, scale: int | None = None) -> float | None:
        """Gap of a cost on ``integer_matrix(scale)`` to the best known, in percent."""
        if self.bks is None or self.bks <= 0:
            return None
        return 100.0 * (self.to_bks_units(cost, scale) - self.bks) / self.bks


def _error(path: Path, line_no: int | None, message: str) -> ValueError:
    where = f"{path}:{line_no}" if line_no is not None else str(path)
    return ValueError(f"{where}: {message}")


def _numbers(path: Path, line_no: int, text: str, count: int, what: str) -> list[float]:
    parts = text.split()
    if len(parts) != count:
        raise _error(path, line_no, f"expected {count} numbers ({what}), got {len(parts)}: {text.strip()!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise _error(path, line_no, f"not a number in {what}: {text.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise _error(path, line_no, f"non-finite number in {what}: {text.strip()!r}")
    return values


# --------------------------------------------------------------------------- Solomon


def solomon_bks(bks_json: Path, name: str) -> float | None:
    """The best-known distance-only cost of a Solomon instance (``NAME_distance``), or None."""
    data = json.loads(Path(bks_json).read_text())
    entry = data.get(f"{name}_distance")
    if entry is None:
        return None
    return float(entry["best_known_cost"])


def read_solomon(path: str | Path, bks_json: str | Path | None = None) -> Instance:
    """Read a Solomon VRPTW text file.

    Layout: the name; ``VEHICLE`` then ``NUMBER CAPACITY`` header and one line with both; ``CUSTOMER``,
    a column header, then one line per node ``CUST_NO X Y DEMAND READY DUE SERVICE`` (node 0 the depot).
    ``bks_json`` defaults to ``VRPTW_BKS.json`` next to the file (when present).
    """
    path = Path(path)
    lines = [(i + 1, raw.strip()) for i, raw in enumerate(path.read_text().splitlines())]
    body = [(i, t) for i, t in lines if t]
    if not body:
        raise _error(path, None, "empty file")
    name = body[0][1].split()[0]
    n_vehicles: int | None = None
    capacity: int | None = None
    rows: list[tuple[int, list[float]]] = []
    section = ""
    for line_no, text in body[1:]:
        upper = text.upper()
        if upper.startswith("VEHICLE"):
            section = "vehicle"
            continue
        if upper.startswith("CUSTOMER"):
            section = "customer"
            continue
        if upper.startswith(("NUMBER", "CUST")):
            continue  # column headers
        if section == "vehicle":
            if n_vehicles is not None:
                raise _error(path, line_no, f"unexpected line in VEHICLE section: {text!r}")
            number, cap = _numbers(path, line_no, text, 2, "NUMBER CAPACITY")
            n_vehicles, capacity = int(number), int(cap)
        elif section == "customer":
            rows.append((line_no, _numbers(path, line_no, text, 7, "CUST_NO X Y DEMAND READY DUE SERVICE")))
        else:
            raise _error(path, line_no, f"unexpected line before the VEHICLE section: {text!r}")
    if n_vehicles is None or capacity is None:
        raise _error(path, None, "no VEHICLE section (NUMBER CAPACITY)")
    if n_vehicles <= 0 or capacity <= 0:
        raise _error(path, None, f"vehicle number and capacity must be positive, got {n_vehicles}, {capacity}")
    if len(rows) < 2:
        raise _error(path, None, "need the depot and at least one customer in the CUSTOMER section")
    for expected, (line_no, values) in enumerate(rows):
        if int(values[0]) != expected:
            raise _error(path, line_no, f"customer number {int(values[0])}, expected {expected} (depot is 0)")
        if values[3] < 0 or values[6] < 0:
            raise _error(path, line_no, "negative demand or service time")
        if values[5] < values[4]:
            raise _error(path, line_no, f"due date {values[5]:g} before ready time {values[4]:g}")
    arr = np.array([v for _, v in rows], dtype=float)
    if bks_json is None:
        candidate = path.parent / "VRPTW_BKS.json"
        bks_json = candidate if candidate.is_file() else None
    bks = solomon_bks(Path(bks_json), name) if bks_json is not None else None
    return Instance(
        name=name,
        kind="vrptw",
        coords=arr[:, 1:3].copy(),
        demand=arr[:, 3].astype(np.int64),
        capacity=capacity,
        n_vehicles=n_vehicles,
        ready=arr[:, 4].copy(),
        due=arr[:, 5].copy(),
        service=arr[:, 6].copy(),
        bks=bks,
        source=str(path),
    )


# --------------------------------------------------------------------------- CVRPLIB


def cvrplib_bks(summary_csv: Path, name: str) -> float | None:
    """The best-known cost of a CVRPLIB instance from ``bks_summary.csv`` (column ``bks_cost``), or None."""
    with Path(summary_csv).open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("instance") == name and row.get("bks_cost"):
                return float(row["bks_cost"])
    return None


def read_cvrplib_solution(path: str | Path) -> tuple[list[list[int]], float | None]:
    """Read a CVRPLIB ``.sol``: routes in node indices (depot 0; customer i of the file is node i) and the Cost."""
    path = Path(path)
    routes: list[list[int]] = []
    cost: float | None = None
    for line_no, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if not text:
            continue
        if text.lower().startswith("route"):
            _, _, rest = text.partition(":")
            try:
                routes.append([int(tok) for tok in rest.split()])
            except ValueError:
                raise _error(path, line_no, f"not a customer number in {text!r}") from None
        elif text.lower().startswith("cost"):
            try:
                cost = float(text.split()[1])
            except (IndexError, ValueError):
                raise _error(path, line_no, f"bad Cost line {text!r}") from None
        else:
            raise _error(path, line_no, f"unexpected line {text!r}")
    return routes, cost


_HEADER = re.compile(r"^\s*([A-Z_]+)\s*:\s*(.*?)\s*$")


def read_cvrplib(path: str | Path, bks_csv: str | Path | None = None) -> Instance:
    """Read a CVRPLIB ``.vrp`` (TSPLIB format, EUC_2D, one depot).

    The fleet size is the ``-kN`` of the name (else "No of trucks" of the COMMENT, else one
    vehicle per customer). The best known comes from ``bks_csv`` (default ``bks_summary.csv``
    in the parent folder), else from the ``Cost`` line of the ``.sol`` next to the file.
    """
    path = Path(path)
    headers: dict[str, str] = {}
    coords: dict[int, tuple[float, float]] = {}
    demands: dict[int, int] = {}
    depots: list[int] = []
    section = ""
    for line_no, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if not text:
            continue
        if text == "EOF":
            break
        if text.endswith("_SECTION"):
            section = text
            continue
        m = _HEADER.match(text)
        if m and not text[0].isdigit() and not text.startswith("-"):
            headers[m.group(1)] = m.group(2)
            section = ""
            continue
        if section == "NODE_COORD_SECTION":
            node, x, y = _numbers(path, line_no, text, 3, "NODE X Y")
            coords[int(node)] = (x, y)
        elif section == "DEMAND_SECTION":
            node, d = _numbers(path, line_no, text, 2, "NODE DEMAND")
            if d < 0:
                raise _error(path, line_no, "negative demand")
            demands[int(node)] = int(d)
        elif section == "DEPOT_SECTION":
            (node,) = _numbers(path, line_no, text, 1, "DEPOT")
            if int(node) != -1:
                depots.append(int(node))
        else:
            raise _error(path, line_no, f"unexpected line {text!r}")
    name = headers.get("NAME", path.stem)
    if headers.get("EDGE_WEIGHT_TYPE", "EUC_2D") != "EUC_2D":
        raise _error(path, None, f"EDGE_WEIGHT_TYPE {headers['EDGE_WEIGHT_TYPE']} not supported (EUC_2D only)")
    try:
        dimension = int(headers["DIMENSION"])
        capacity = int(headers["CAPACITY"])
    except KeyError as e:
        raise _error(path, None, f"missing header {e.args[0]}") from None
    except ValueError:
        raise _error(path, None, "DIMENSION and CAPACITY must be integers") from None
    if capacity <= 0:
        raise _error(path, None, f"CAPACITY must be positive, got {capacity}")
    nodes = list(range(1, dimension + 1))
    for what, table in (("NODE_COORD_SECTION", coords), ("DEMAND_SECTION", demands)):
        if sorted(table) != nodes:
            raise _error(path, None, f"{what} must list nodes 1..{dimension} once each, got {len(table)} entries")
    if depots != [1]:
        raise _error(path, None, f"expected DEPOT_SECTION with node 1 as the only depot, got {depots}")
    m_k = re.search(r"-k(\d+)", name)
    m_c = re.search(r"No of trucks:\s*(\d+)", headers.get("COMMENT", ""))
    n_vehicles = int(m_k.group(1)) if m_k else int(m_c.group(1)) if m_c else dimension - 1
    bks: float | None = None
    if bks_csv is None:
        candidate = path.parent.parent / "bks_summary.csv"
        bks_csv = candidate if candidate.is_file() else None
    if bks_csv is not None:
        bks = cvrplib_bks(Path(bks_csv), name)
    if bks is None and path.with_suffix(".sol").is_file():
        bks = read_cvrplib_solution(path.with_suffix(".sol"))[1]
    n = dimension
    return Instance(
        name=name,
        kind="cvrp",
        coords=np.array([coords[i] for i in nodes], dtype=float),
        demand=np.array([demands[i] for i in nodes], dtype=np.int64),
        capacity=capacity,
        n_vehicles=n_vehicles,
        ready=np.zeros(n),
        due=np.full(n, np.inf),
        service=np.zeros(n),
        bks=bks,
        source=str(path),
    )


def read_instance(path: str | Path) -> Instance:
    """Read a Solomon ``.txt`` or a CVRPLIB ``.vrp`` by its suffix."""
    path = Path(path)
    if path.suffix.lower() == ".vrp":
        return read_cvrplib(path)
    if path.suffix.lower() == ".txt":
        return read_solomon(path)
    raise ValueError(f"{path}: unknown instance format (expected a Solomon .txt or a CVRPLIB .vrp)")


def solomon_paths(root: str | Path, prefixes: tuple[str, ...] = ("C1", "R1")) -> list[Path]:
    """Solomon files under ``root`` whose name starts with one of ``prefixes`` (C1: C101..C109), sorted."""
    root = Path(root)
    return sorted(p for p in root.glob("*.txt") if p.stem.upper().startswith(prefixes) and len(p.stem) == 4)


def cvrplib_paths(root: str | Path, sets: tuple[str, ...] = ("A", "P")) -> list[Path]:
    """CVRPLIB ``.vrp`` files of the given sets under ``root`` (``root/A/*.vrp``...), in natural order."""
    root = Path(root)

    def key(p: Path) -> tuple[str, list[int]]:
        return p.parent.name, [int(x) for x in re.findall(r"\d+", p.stem)]

    return sorted((p for s in sets for p in (root / s).glob("*.vrp")), key=key)


# --------------------------------------------------------------------------- solutions


def route_cost(routes: list[list[int]], matrix: np.ndarray) -> int:
    """Total cost of routes (node indices, depot 0 left out) on ``matrix``, depot to depot."""
    total = 0
    for route in routes:
        if not route:
            continue
        path = [0, *route, 0]
        total += int(sum(int(matrix[a, b]) for a, b in itertools.pairwise(path)))
    return total


def check_solution(
    instance: Instance,
    routes: list[list[int]],
    matrix: np.ndarray,
    scale: int | None = None,
) -> list[str]:
    """Every violation of ``routes`` on ``instance``; an empty list means feasible.

    ``routes`` are lists of customer node indices (1..n-1) without the depot; empty routes are
    ignored. ``matrix`` is the travel time (= distance) matrix in units of ``scale`` (default the
    instance's), as from ``instance.integer_matrix(scale)``. Checks: valid indices, every customer
    exactly once, load <= capacity per route, non-empty routes <= fleet size, and, with time
    windows, service starting at ``max(arrival, ready)`` no later than ``due`` (waiting allowed)
    and the return to the depot no later than the depot's due time.
    """
    problems: list[str] = []
    n = instance.n
    used = [r for r in routes if len(r) > 0]
    if len(used) > instance.n_vehicles:
        problems.append(f"{len(used)} routes, fleet has {instance.n_vehicles} vehicles")
    seen: dict[int, int] = {}
    for k, route in enumerate(used):
        for node in route:
            if not (isinstance(node, int | np.integer) and 1 <= int(node) < n):
                problems.append(f"route {k}: invalid customer {node!r}")
                continue
            if int(node) in seen:
                problems.append(f"customer {int(node)} visited twice (routes {seen[int(node)]} and {k})")
            seen[int(node)] = k
    missing = sorted(set(range(1, n)) - set(seen))
    if missing:
        head = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        problems.append(f"{len(missing)} customers not served: {head}")
    if problems and any("invalid" in p for p in problems):
        return problems
    ready, due, service = instance.integer_times(scale)
    for k, route in enumerate(used):
        load = int(sum(int(instance.demand[int(c)]) for c in route))
        if load > instance.capacity:
            problems.append(f"route {k}: load {load} > capacity {instance.capacity}")
        if not instance.has_time_windows:
            continue
        t = int(ready[0])
        prev = 0
        for node in [*(int(c) for c in route), 0]:
            arrival = t + int(matrix[prev, node])
            start = max(arrival, int(ready[node]))
            if start > int(due[node]):
                where = "depot (return)" if node == 0 else f"customer {node}"
                problems.append(f"route {k}: {where} reached at {arrival}, due {int(due[node])}")
            t = start + (int(service[node]) if node != 0 else 0)
            prev = node
    return problems
