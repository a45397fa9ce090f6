"""Reading problems from files: TSPLIB ``.tsp`` (EUC_2D) and the project's JSON format.

JSON format (all times in seconds)::

    {
      "matrix": [[0, 120, ...], ...],          # asymmetric travel times; null = no path
      "start": 0,                              # optional, default 0
      "end": "return" | "open" | {"node": k},  # optional, default "return"
      "windows": [null, [0, 3600], ...],       # optional, per node: [earliest, latest] or null
      "service": [0, 300, ...],                # optional, per node
      "coords": [[x, y], ...]                  # optional, per node (planar or lat/lon)
    }
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from routing_core.problem import EndKind, Problem


class ProblemFormatError(ValueError):
    """A problem file that cannot be read; the message names the file and the field."""


def read_problem(path: Path) -> Problem:
    """A problem from a ``.tsp`` or ``.json`` file."""
    if not path.is_file():
        raise ProblemFormatError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".tsp":
        return read_tsplib(path)
    if suffix == ".json":
        return read_json_problem(path)
    raise ProblemFormatError(f"{path}: unsupported problem format {suffix!r} (expected .tsp or .json)")


def read_tsplib(path: Path) -> Problem:
    """A TSPLIB EUC_2D instance; distances are TSPLIB's nint(euclidean), start = node 0, tour returns."""
    header: dict[str, str] = {}
    coords: list[tuple[float, float]] = []
    in_coords = False
    try:
        lines = path.read_text(errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemFormatError(f"{path}: cannot read: {exc}") from None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "EOF":
            break
        if line == "NODE_COORD_SECTION":
            in_coords = True
            continue
        if in_coords:
            parts = line.split()
            if len(parts) != 3:
                raise ProblemFormatError(f"{path}:{lineno}: NODE_COORD_SECTION line needs 'id x y'")
            try:
                coords.append((float(parts[1]), float(parts[2])))
            except ValueError:
                raise ProblemFormatError(f"{path}:{lineno}: coordinates must be numbers") from None
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            header[key.strip().upper()] = value.strip()
        elif line.endswith("_SECTION"):
            raise ProblemFormatError(f"{path}:{lineno}: section {line} is not supported (EUC_2D only)")
    kind = header.get("EDGE_WEIGHT_TYPE")
    if kind != "EUC_2D":
        raise ProblemFormatError(f"{path}: EDGE_WEIGHT_TYPE must be EUC_2D, got {kind!r}")
    dim = header.get("DIMENSION")
    if dim is None or not dim.isdigit():
        raise ProblemFormatError(f"{path}: DIMENSION missing or not an integer")
    if len(coords) != int(dim):
        raise ProblemFormatError(f"{path}: DIMENSION is {dim} but {len(coords)} coordinates were given")
    if len(coords) < 2:
        raise ProblemFormatError(f"{path}: needs at least 2 nodes")
    xy = np.asarray(coords)
    diff = xy[:, None, :] - xy[None, :, :]
    # TSPLIB's nint: round half up (floor(x + 0.5)).
    matrix = np.floor(np.sqrt((diff**2).sum(-1)) + 0.5)
    return Problem(matrix=matrix, coords=xy)


def read_json_problem(path: Path) -> Problem:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemFormatError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ProblemFormatError(f"{path}: top level must be an object")
    return problem_from_dict(data, source=str(path))


def problem_from_dict(data: dict[str, Any], source: str = "problem") -> Problem:
    """Build a Problem from the JSON format; errors name the field."""
    raw = data.get("matrix")
    if not isinstance(raw, list) or not raw or not all(isinstance(r, list) for r in raw):
        raise ProblemFormatError(f"{source}: 'matrix' must be a non-empty list of rows")
    n = len(raw)
    for i, row in enumerate(raw):
        if len(row) != n:
            raise ProblemFormatError(f"{source}: 'matrix[{i}]' has {len(row)} values, expected {n} (square matrix)")
    try:
        matrix = np.asarray([[math.inf if v is None else float(v) for v in row] for row in raw], dtype=np.float64)
    except (TypeError, ValueError):
        raise ProblemFormatError(f"{source}: 'matrix' entries must be numbers or null") from None
    if matrix.shape != (n, n):
        raise ProblemFormatError(f"{source}: 'matrix' must be square ({n} rows, each of {n} values)")
    earliest = np.zeros(n)
    latest = np.full(n, math.inf)
    windows = data.get("windows")
    if windows is not None:
        if not isinstance(windows, list) or len(windows) != n:
            raise ProblemFormatError(f"{source}: 'windows' must be a list of {n} entries")
        for i, w in enumerate(windows):
            if w is None:
                continue
            if not (isinstance(w, list) and len(w) == 2 and all(isinstance(v, int | float) for v in w)):
                raise ProblemFormatError(f"{source}: 'windows[{i}]' must be [earliest, latest] or null")
            earliest[i], latest[i] = float(w[0]), float(w[1])
    service = data.get("service")
    service_arr = None
    if service is not None:
        if not isinstance(service, list) or len(service) != n:
            raise ProblemFormatError(f"{source}: 'service' must be a list of {n} numbers")
        try:
            service_arr = np.asarray([float(v) for v in service])
        except (TypeError, ValueError):
            raise ProblemFormatError(f"{source}: 'service' entries must be numbers") from None
    start = data.get("start", 0)
    if not isinstance(start, int) or isinstance(start, bool):
        raise ProblemFormatError(f"{source}: 'start' must be a node index")
    end = data.get("end", "return")
    end_node = None
    if isinstance(end, dict):
        end_node = end.get("node")
        if not isinstance(end_node, int) or isinstance(end_node, bool):
            raise ProblemFormatError(f"{source}: 'end.node' must be a node index")
        end_kind = EndKind.FIXED
    elif end in ("return", "open"):
        end_kind = EndKind(end)
    else:
        raise ProblemFormatError(f"{source}: 'end' must be 'return', 'open' or {{\"node\": k}}")
    coords = data.get("coords")
    try:
        return Problem(matrix=matrix, earliest=earliest, latest=latest, service_s=service_arr if service_arr is not None else np.zeros(n), start=start,
                       end=end_kind, end_node=end_node,
                       coords=None if coords is None else np.asarray(coords, dtype=np.float64))  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise ProblemFormatError(f"{source}: {exc}") from None
