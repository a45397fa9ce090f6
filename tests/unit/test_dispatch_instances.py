"""Benchmark instance readers (Solomon VRPTW, CVRPLIB) and the independent solution checker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dispatch.instances import (
    Instance,
    check_solution,
    cvrplib_bks,
    cvrplib_paths,
    read_cvrplib,
    read_cvrplib_solution,
    read_instance,
    read_solomon,
    route_cost,
    solomon_bks,
    solomon_paths,
)

SOLOMON_TEXT = """TINY1

VEHICLE
NUMBER     CAPACITY
  2         15

CUSTOMER
CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME

    0      0          0          0          0        100          0
    1      3          4          6          0         10          2
    2      0          5          6         20         30          1
    3      6          8          4          0        100          0
"""

CVRP_TEXT = """NAME : T-n4-k2
COMMENT : (tiny, No of trucks: 2, Optimal value: 0)
TYPE : CVRP
DIMENSION : 4
EDGE_WEIGHT_TYPE : EUC_2D
CAPACITY : 10
NODE_COORD_SECTION
 1 0 0
 2 3 4
 3 0 5
 4 1 1
DEMAND_SECTION
1 0
2 6
3 5
4 4
DEPOT_SECTION
 1
 -1
EOF
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- synthetic files


def test_solomon_reader_and_scaled_matrix(tmp_path: Path) -> None:
    inst = read_solomon(write(tmp_path, "TINY1.txt", SOLOMON_TEXT.replace("\n", "\r\n")))
    assert inst.name == "TINY1" and inst.kind == "vrptw"
    assert (inst.n, inst.n_vehicles, inst.capacity) == (4, 2, 15)
    assert inst.demand.tolist() == [0, 6, 6, 4]
    assert inst.ready.tolist() == [0, 0, 20, 0] and inst.due.tolist() == [100, 10, 30, 100]
    m = inst.integer_matrix()
    assert m.dtype == np.int64 and m[0, 1] == 5000 and m[1, 2] == round(1000 * np.hypot(3, 1))
    assert (m == m.T).all() and (np.diag(m) == 0).all()
    _ready, due, service = inst.integer_times()
    assert due.tolist() == [100_000, 10_000, 30_000, 100_000] and service.tolist() == [0, 2000, 1000, 0]
    assert inst.bks is None  # no VRPTW_BKS.json next to it


def test_cvrplib_reader_uses_nint(tmp_path: Path) -> None:
    inst = read_cvrplib(write(tmp_path, "T-n4-k2.vrp", CVRP_TEXT))
    assert inst.kind == "cvrp" and inst.n == 4 and inst.n_vehicles == 2 and inst.capacity == 10
    m = inst.integer_matrix()
    assert m[0, 1] == 5 and m[0, 3] == 1  # nint(sqrt 2) = 1
    assert m[1, 3] == 4  # nint(sqrt(13) = 3.61)
    assert not inst.has_time_windows and np.isinf(inst.due).all()


def test_read_instance_by_suffix(tmp_path: Path) -> None:
    assert read_instance(write(tmp_path, "x.vrp", CVRP_TEXT)).kind == "cvrp"
    assert read_instance(write(tmp_path, "TINY1.txt", SOLOMON_TEXT)).kind == "vrptw"
    with pytest.raises(ValueError, match="unknown instance format"):
        read_instance(write(tmp_path, "x.json", "{}"))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad1.txt",
            SOLOMON_TEXT.replace("    2      0          5", "    2      0          x"),
            r"bad1\.txt:12: not a number",
        ),
        ("bad2.txt", SOLOMON_TEXT.replace("  2         15", "  2"), r"bad2\.txt:5: expected 2 numbers"),
        ("bad3.txt", SOLOMON_TEXT.replace("    3      6 ", "    7      6 "), r"bad3\.txt:13: customer number 7"),
        ("bad4.txt", SOLOMON_TEXT.replace("20         30", "40         30"), r"bad4\.txt:12: due date"),
        ("bad5.vrp", CVRP_TEXT.replace("3 5\n", ""), r"bad5\.vrp: DEMAND_SECTION must list nodes 1\.\.4"),
        ("bad6.vrp", CVRP_TEXT.replace(" 3 0 5", " 3 0 five"), r"bad6\.vrp:10: not a number"),
        ("bad7.vrp", CVRP_TEXT.replace("CAPACITY : 10\n", ""), r"bad7\.vrp: missing header CAPACITY"),
        ("bad8.vrp", CVRP_TEXT.replace("EUC_2D", "GEO"), r"bad8\.vrp: EDGE_WEIGHT_TYPE GEO"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_instance(write(tmp_path, name, text))


def test_bks_lookup(tmp_path: Path) -> None:
    bks = write(
        tmp_path,
        "VRPTW_BKS.json",
        json.dumps({"TINY1": {"best_known_cost": 9.0}, "TINY1_distance": {"best_known_cost": 7.5}}),
    )
    assert solomon_bks(bks, "TINY1") == 7.5  # the distance-only best known
    assert solomon_bks(bks, "OTHER") is None
    assert read_solomon(write(tmp_path, "TINY1.txt", SOLOMON_TEXT)).bks == 7.5
    csv_path = write(tmp_path, "bks_summary.csv", "set,instance,bks_cost\nT,T-n4-k2,16\n")
    assert cvrplib_bks(csv_path, "T-n4-k2") == 16.0 and cvrplib_bks(csv_path, "X") is None
    (tmp_path / "T").mkdir()
    assert read_cvrplib(write(tmp_path / "T", "T-n4-k2.vrp", CVRP_TEXT)).bks == 16.0
    # A gap for Solomon compares cost / 1000 with the unrounded best known.
    inst = read_solomon(tmp_path / "TINY1.txt")
    assert inst.gap_percent(7500 * 1.02) == pytest.approx(2.0)


# --------------------------------------------------------------------------- checker


def tiny_vrptw(tmp_path: Path) -> Instance:
    return read_solomon(write(tmp_path, "TINY1.txt", SOLOMON_TEXT))


def test_checker_accepts_feasible_with_waiting(tmp_path: Path) -> None:
    inst = tiny_vrptw(tmp_path)
    m = inst.integer_matrix()
    # 0 -> 1 (arrive 5, serve 2) -> 2 (arrive 7 + 3.16, wait to 20) -> 0; 3 alone.
    assert check_solution(inst, [[1, 2], [3]], m) == []
    assert route_cost([[1, 2], [3]], m) == 5000 + 3162 + 5000 + 2 * 10000


def test_checker_finds_each_violation(tmp_path: Path) -> None:
    inst = tiny_vrptw(tmp_path)
    m = inst.integer_matrix()
    assert any("not served" in p for p in check_solution(inst, [[1, 2]], m))
    assert any("visited twice" in p for p in check_solution(inst, [[1, 2], [3, 1]], m))
    assert any(
        "load 16 > capacity 15" in p
        for p in check_solution(inst, [[1, 3, 2]], m) + check_solution(inst, [[2, 3, 1]], m)
    )
    late = check_solution(inst, [[2, 1], [3]], m)  # 1 after 2: past its due 10
    assert any("customer 1 reached" in p for p in late)
    assert any("3 routes, fleet has 2" in p for p in check_solution(inst, [[1], [2], [3]], m))
    assert any("invalid customer" in p for p in check_solution(inst, [[1, 2], [3, 4]], m))
    assert check_solution(inst, [[1, 2], [], [3]], m) == []  # empty routes do not count


def test_checker_depot_closing_time(tmp_path: Path) -> None:
    text = SOLOMON_TEXT.replace(
        "0          0          0          0        100", "0          0          0          0         21"
    )
    inst = read_solomon(write(tmp_path, "TINY1.txt", text))
    problems = check_solution(inst, [[1, 2], [3]], inst.integer_matrix())
    assert any("depot (return)" in p for p in problems)


# --------------------------------------------------------------------------- real files


@pytest.mark.shared_data
def test_real_solomon_files(shared_data: Path) -> None:
    root = shared_data / "benchmarks" / "solomon_vrptw"
    paths = solomon_paths(root)
    assert [p.stem for p in paths] == [f"C10{i}" for i in range(1, 10)] + [f"R1{i:02d}" for i in range(1, 13)]
    c101 = read_solomon(root / "C101.txt")
    assert (c101.n, c101.n_vehicles, c101.capacity) == (101, 25, 200)
    assert c101.coords[0].tolist() == [40, 50] and c101.due[0] == 1236
    assert c101.bks == pytest.approx(828.94)
    assert int(c101.demand.sum()) == 1810
    for p in paths:
        inst = read_solomon(p)
        assert inst.bks is not None and inst.n == 101


@pytest.mark.shared_data
def test_real_cvrplib_files_and_known_solutions(shared_data: Path) -> None:
    root = shared_data / "benchmarks" / "cvrplib"
    paths = cvrplib_paths(root)
    assert len(paths) == 51 and paths[0].stem == "A-n32-k5"
    for p in paths:
        inst = read_cvrplib(p)
        routes, sol_cost = read_cvrplib_solution(p.with_suffix(".sol"))
        m = inst.integer_matrix()
        # The best-known .sol is feasible under our checker and costs the BKS on nint distances.
        assert check_solution(inst, routes, m) == [], inst.name
        assert route_cost(routes, m) == inst.bks == sol_cost, inst.name
