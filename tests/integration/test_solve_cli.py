"""`routing solve` end to end, as a user runs it: a subprocess reading a problem file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from routing_core.problem import evaluate
from routing_core.problem_io import read_problem

REPO = Path(__file__).resolve().parents[2]


def routing_solve(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routing_api.cli", "solve", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def solve_json(*args: str | Path) -> dict:
    proc = routing_solve(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out["elapsed_ms"], float | int) and out["elapsed_ms"] >= 0
    assert out["guide"] == "knn"
    return out


@pytest.fixture(scope="module")
def berlin52(shared_data: Path) -> Path:
    return shared_data / "benchmarks" / "tsplib" / "berlin52.tsp"


@pytest.mark.shared_data
def test_berlin52_reaches_the_known_optimum(berlin52: Path, shared_data: Path) -> None:
    optima = dict(
        (row.split(",")[0], int(row.split(",")[2]))
        for row in (shared_data / "benchmarks" / "tsplib" / "optima.csv").read_text().splitlines()[1:]
        if row
    )
    assert optima["berlin52"] == 7542
    out = solve_json(berlin52, "--time-limit-ms", "2000")
    assert out["cost"] == 7542
    order = out["order"]
    assert order[0] == 0
    assert sorted(order) == list(range(52))
    assert out["feasible"] is True
    assert out["lateness_s"] == 0
    assert out["late_stops"] == []
    assert out["iterations"] >= 0
    # The printed cost is the cost of the printed tour.
    assert evaluate(read_problem(berlin52), order[1:]).travel_s == out["cost"]


@pytest.mark.shared_data
def test_iterations_and_seed_make_runs_repeatable(berlin52: Path) -> None:
    args = (berlin52, "--iterations", "200", "--seed", "3", "--time-limit-ms", "1e7")
    first = solve_json(*args)
    second = solve_json(*args)
    assert first["order"] == second["order"]
    assert first["cost"] == second["cost"]
    assert first["iterations"] == second["iterations"] == 200


@pytest.mark.shared_data
def test_plain_output_prints_cost_and_tour(berlin52: Path) -> None:
    proc = routing_solve(berlin52, "--iterations", "50")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first.startswith("cost ")
    tour = [int(x) for x in second.split()]
    assert tour[0] == 0 and sorted(tour) == list(range(52))
    assert float(first.split()[1]) == evaluate(read_problem(berlin52), tour[1:]).travel_s


# The 4-node matrix of the evaluator tests. Without windows 0-1-2-3-0 is best (travel 53), but then stop 3
# is reached at 52, after its window [0, 35]. On-time routes: 0-3-2-1-0 (arrive 30, 38, 44; travel
# 30 + 8 + 6 + 11 = 55), 0-2-3-1-0 (20, 27, 53; travel 64) and 0-3-1-2-0 (30, 56, 61; travel 82): best 55.
WINDOWED = {
    "matrix": [[0, 10, 20, 30], [11, 0, 5, 25], [21, 6, 0, 7], [31, 26, 8, 0]],
    "windows": [None, [40, 100], [0, 1000], [0, 35]],
    "service": [0, 0, 0, 0],
}


def test_json_problem_with_windows_is_solved_on_time(tmp_path: Path) -> None:
    path = tmp_path / "windows.json"
    path.write_text(json.dumps(WINDOWED))
    out = solve_json(path, "--iterations", "50")
    assert out["feasible"] is True
    assert out["order"] == [0, 3, 2, 1]
    assert out["cost"] == 55
    assert out["lateness_s"] == 0
    assert out["late_stops"] == []


def test_json_problem_with_impossible_windows_names_the_late_stops(tmp_path: Path) -> None:
    data = dict(WINDOWED, windows=[None, [0, 5], [0, 5], None])  # nothing is reachable within 5 s
    path = tmp_path / "late.json"
    path.write_text(json.dumps(data))
    out = solve_json(path, "--iterations", "50")
    assert out["feasible"] is False
    assert sorted(out["late_stops"]) == [1, 2]
    assert out["lateness_s"] > 0
    assert math.isfinite(out["cost"])


def test_json_problem_with_a_fixed_end_prints_the_end_last(tmp_path: Path) -> None:
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps({"matrix": WINDOWED["matrix"], "start": 2, "end": {"node": 0}}))
    out = solve_json(path, "--iterations", "50")
    assert out["order"][0] == 2
    assert out["order"][-1] == 0
    assert sorted(out["order"]) == [0, 1, 2, 3]
    # Routes from 2 to 0 through 1 and 3: 2-1-3-0 = 6 + 25 + 31 = 62, 2-3-1-0 = 7 + 26 + 11 = 44.
    assert out["order"] == [2, 3, 1, 0]
    assert out["cost"] == 44


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.json", '{"matrix": [[0, 1], [1, 0]],}', "invalid JSON at line 1"),
        ("ragged.json", '{"matrix": [[0, 1], [1]]}', "'matrix[1]'"),
        ("geo.tsp", "NAME: g\nDIMENSION: 2\nEDGE_WEIGHT_TYPE: GEO\nNODE_COORD_SECTION\n1 0 0\n2 1 1\nEOF\n", "EUC_2D"),
        ("problem.csv", "0,1\n1,0\n", "unsupported problem format"),
        ("missing.json", None, "file not found"),
    ],
)
def test_a_bad_problem_file_exits_2_with_a_one_line_error(
    tmp_path: Path, name: str, content: str | None, fragment: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    proc = routing_solve(path, "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert str(path) in lines[0]
    assert fragment in lines[0]


def test_bad_search_settings_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(WINDOWED))
    proc = routing_solve(path, "--iterations", "-1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "max_iterations" in proc.stderr
    assert "Traceback" not in proc.stderr
