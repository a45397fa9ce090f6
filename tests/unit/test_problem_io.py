"""Reading problems: TSPLIB EUC_2D files and the project's JSON format, and their error messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from routing_core.problem import EndKind, evaluate
from routing_core.problem_io import ProblemFormatError, problem_from_dict, read_json_problem, read_problem, read_tsplib


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _tsp(*coord_lines: str, dimension: str | None = "4", kind: str = "EUC_2D", extra: str = "") -> str:
    head = ["NAME : tiny", "TYPE : TSP", "COMMENT : hand made: four points"]
    if dimension is not None:
        head.append(f"DIMENSION : {dimension}")
    head.append(f"EDGE_WEIGHT_TYPE : {kind}")
    return "\n".join([*head, extra, "NODE_COORD_SECTION", *coord_lines, "EOF", ""])


TINY = ("1 0 0", "2 3 4", "3 0 1.5", "4 0.0e0 2.5e0")


# -- TSPLIB ----------------------------------------------------------------------------


def test_tsplib_distances_are_nint_of_euclidean(tmp_path: Path) -> None:
    p = read_tsplib(_write(tmp_path / "tiny.tsp", _tsp(*TINY)))
    # Points a=(0,0), b=(3,4), c=(0,1.5), d=(0,2.5):
    #   ab = 5                      -> 5
    #   ac = 1.5                    -> 2  (nint rounds half up)
    #   ad = 2.5                    -> 3  (half up, not to even)
    #   bc = sqrt(9 + 6.25) = 3.905 -> 4
    #   bd = sqrt(9 + 2.25) = 3.354 -> 3
    #   cd = 1.0                    -> 1
    expected = np.array(
        [
            [0, 5, 2, 3],
            [5, 0, 4, 3],
            [2, 4, 0, 1],
            [3, 3, 1, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(p.matrix, expected)
    assert p.start == 0
    assert p.end is EndKind.RETURN
    assert p.stops.tolist() == [1, 2, 3]
    assert p.coords is not None
    np.testing.assert_array_equal(p.coords, [[0, 0], [3, 4], [0, 1.5], [0, 2.5]])
    assert not p.has_windows
    # Tour a-b-c-d-a: 5 + 4 + 1 + 3 = 13.
    assert evaluate(p, [1, 2, 3]).travel_s == 13.0


def test_read_problem_dispatches_on_the_suffix_case_insensitively(tmp_path: Path) -> None:
    p = read_problem(_write(tmp_path / "TINY.TSP", _tsp(*TINY)))
    assert p.n_nodes == 4


def test_tsplib_ignores_what_follows_eof(tmp_path: Path) -> None:
    text = _tsp(*TINY) + "garbage after the end\n"
    assert read_tsplib(_write(tmp_path / "t.tsp", text)).n_nodes == 4


def _format_error(path: Path, *fragments: str) -> ProblemFormatError:
    with pytest.raises(ProblemFormatError) as info:
        read_problem(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_tsplib_other_edge_weight_types_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "geo.tsp", _tsp(*TINY, kind="GEO"))
    _format_error(path, "EDGE_WEIGHT_TYPE must be EUC_2D", "'GEO'")


def test_tsplib_missing_edge_weight_type_is_rejected(tmp_path: Path) -> None:
    text = _tsp(*TINY).replace("EDGE_WEIGHT_TYPE : EUC_2D\n", "")
    _format_error(_write(tmp_path / "none.tsp", text), "EDGE_WEIGHT_TYPE must be EUC_2D", "None")


def test_tsplib_missing_dimension_is_rejected(tmp_path: Path) -> None:
    _format_error(_write(tmp_path / "nodim.tsp", _tsp(*TINY, dimension=None)), "DIMENSION missing")


def test_tsplib_non_integer_dimension_is_rejected(tmp_path: Path) -> None:
    _format_error(_write(tmp_path / "dim.tsp", _tsp(*TINY, dimension="four")), "DIMENSION missing or not an integer")


def test_tsplib_dimension_mismatch_is_rejected(tmp_path: Path) -> None:
    _format_error(_write(tmp_path / "mismatch.tsp", _tsp(*TINY, dimension="5")), "DIMENSION is 5 but 4 coordinates")


def test_tsplib_non_numeric_coordinate_names_the_line(tmp_path: Path) -> None:
    text = _tsp("1 0 0", "2 3 x", "3 0 1.5", "4 0 2.5")
    path = _write(tmp_path / "nan.tsp", text)
    # Lines: NAME, TYPE, COMMENT, DIMENSION, EDGE_WEIGHT_TYPE, (blank), NODE_COORD_SECTION, 1..., 2 3 x = line 9.
    _format_error(path, f"{path}:9:", "coordinates must be numbers")


def test_tsplib_short_coordinate_line_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.tsp", _tsp("1 0 0", "2 3", "3 0 1.5", "4 0 2.5"))
    _format_error(path, f"{path}:9:", "needs 'id x y'")


def test_tsplib_explicit_weights_section_is_rejected(tmp_path: Path) -> None:
    text = "NAME: x\nDIMENSION: 2\nEDGE_WEIGHT_TYPE: EXPLICIT\nEDGE_WEIGHT_SECTION\n0 1\n1 0\nEOF\n"
    path = _write(tmp_path / "explicit.tsp", text)
    _format_error(path, f"{path}:4:", "EDGE_WEIGHT_SECTION is not supported")


def test_tsplib_single_node_is_rejected(tmp_path: Path) -> None:
    _format_error(_write(tmp_path / "one.tsp", _tsp("1 0 0", dimension="1")), "at least 2 nodes")


def test_tsplib_undecodable_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bin.tsp"
    path.write_bytes(b"NAME: \xff\xfe\x00\n")
    _format_error(path, "cannot read")


def test_unsupported_suffix_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "problem.txt", _tsp(*TINY))
    _format_error(path, "unsupported problem format '.txt'")


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    _format_error(tmp_path / "nowhere.tsp", "file not found")


def test_a_directory_is_not_a_problem_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir.json"
    folder.mkdir()
    _format_error(folder, "file not found")


def test_problem_format_error_is_a_value_error() -> None:
    assert issubclass(ProblemFormatError, ValueError)


# -- TSPLIB reference files --------------------------------------------------------------


def _opt_tour(path: Path) -> list[int]:
    """A TSPLIB .opt.tour (1-based ids, with or without a header) as 0-based nodes."""
    nodes: list[int] = []
    for line in path.read_text().splitlines():
        for token in line.split():
            if token.lstrip("-").isdigit():
                if int(token) == -1:
                    return nodes
                nodes.append(int(token) - 1)
            else:
                break
    return nodes


@pytest.mark.shared_data
def test_berlin52_is_read_with_the_tsplib_distances(shared_data: Path) -> None:
    p = read_problem(shared_data / "benchmarks" / "tsplib" / "berlin52.tsp")
    assert p.n_nodes == 52
    assert p.start == 0
    np.testing.assert_array_equal(p.matrix, p.matrix.T)
    assert np.all(np.diag(p.matrix) == 0)
    # Node 1 (565, 575) to node 2 (25, 185): sqrt(540^2 + 390^2) = sqrt(443700) = 666.1 -> 666.
    assert p.matrix[0, 1] == 666.0


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["berlin52", "eil76", "pr76", "kroA100", "ch130"])
def test_known_optimal_tours_cost_the_published_optimum(shared_data: Path, name: str) -> None:
    base = shared_data / "benchmarks" / "tsplib"
    optima = {
        row.split(",")[0]: int(row.split(",")[2]) for row in (base / "optima.csv").read_text().splitlines()[1:] if row
    }
    p = read_problem(base / f"{name}.tsp")
    tour = _opt_tour(base / "opt_tours" / f"{name}.opt.tour")
    assert sorted(tour) == list(range(p.n_nodes))
    k = tour.index(0)
    order = tour[k + 1 :] + tour[:k]
    ev = evaluate(p, order)
    assert ev.valid
    assert ev.travel_s == optima[name]


# -- JSON ------------------------------------------------------------------------------

FULL = {
    "matrix": [
        [0, 100, None, 40],
        [120, 0, 50, 70],
        [80, 60, 0, 30],
        [45, 75, 35, 0],
    ],
    "start": 1,
    "end": {"node": 3},
    "windows": [[0, 200], None, [150, 300], None],
    "service": [10, 0, 20, 0],
    "coords": [[0, 0], [1, 0], [1, 1], [0, 1]],
}


def test_json_problem_with_every_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "full.json", json.dumps(FULL))
    p = read_problem(path)
    assert p.n_nodes == 4
    assert math.isinf(p.matrix[0, 2])
    assert p.matrix[2, 0] == 80.0
    assert p.start == 1
    assert p.end is EndKind.FIXED
    assert p.end_node == 3
    assert p.stops.tolist() == [0, 2]
    assert p.earliest.tolist() == [0.0, 0.0, 150.0, 0.0]
    assert p.latest.tolist() == [200.0, math.inf, 300.0, math.inf]
    assert p.service_s.tolist() == [10.0, 0.0, 20.0, 0.0]
    assert p.coords is not None and p.coords.tolist() == FULL["coords"]
    assert p.has_windows
    # Route 1 -> 2 -> 0 -> end 3: 1->2 = 50, arrive 50, wait to 150, serve 20 -> 170;
    # 2->0 = 80 -> arrive 250, latest 200 -> 50 s late, serve 10 -> 260; 0->3 = 40 -> end at 300.
    ev = evaluate(p, [2, 0])
    assert ev.valid
    assert ev.travel_s == 170.0
    assert ev.start_service.tolist() == [150.0, 250.0]
    assert ev.total_lateness == 50.0
    assert ev.late_stops == (0,)
    assert ev.end_arrival == 300.0
    # Route 1 -> 0 -> 2 uses the missing edge 0->2.
    assert not evaluate(p, [0, 2]).valid


def test_json_defaults(tmp_path: Path) -> None:
    p = read_json_problem(_write(tmp_path / "min.json", '{"matrix": [[0, 1], [2, 0]]}'))
    assert p.start == 0
    assert p.end is EndKind.RETURN
    assert p.end_node is None
    assert p.coords is None
    assert not p.has_windows
    assert p.service_s.tolist() == [0.0, 0.0]


def test_json_open_end() -> None:
    p = problem_from_dict({"matrix": [[0, 1], [2, 0]], "end": "open"})
    assert p.end is EndKind.OPEN
    assert evaluate(p, [1]).travel_s == 1.0


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.json", '{\n  "matrix": [[0]]\n  "start": 0\n}')
    _format_error(path, "invalid JSON at line 3 column 3")


def test_json_top_level_must_be_an_object(tmp_path: Path) -> None:
    _format_error(_write(tmp_path / "list.json", "[[0, 1], [1, 0]]"), "top level must be an object")


def test_json_undecodable_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b'{"matrix": "\xff"}')
    _format_error(path, "cannot read")


def _dict_error(data: dict, *fragments: str) -> None:
    with pytest.raises(ProblemFormatError) as info:
        problem_from_dict(data, source="p.json")
    message = str(info.value)
    assert message.startswith("p.json: "), message
    for fragment in fragments:
        assert fragment in message, message


def _with(**changes: object) -> dict:
    data = json.loads(json.dumps(FULL))
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({}, ("'matrix' must be a non-empty list of rows",)),
        ({"matrix": []}, ("'matrix' must be a non-empty list",)),
        ({"matrix": [1, 2]}, ("'matrix' must be a non-empty list",)),
        ({"matrix": [[0, 1], [1]]}, ("'matrix[1]' has 1 values, expected 2",)),
        ({"matrix": [[0, 1, 2], [1, 0, 2]]}, ("'matrix[0]' has 3 values, expected 2",)),
        ({"matrix": [[0, "x"], [1, 0]]}, ("'matrix' entries must be numbers or null",)),
        ({"matrix": [[0, [1]], [1, 0]]}, ("'matrix' entries must be numbers or null",)),
        ({"matrix": [[0, -5], [1, 0]]}, ("matrix entries must be >= 0",)),
        (_with(windows=[[0, 200], None, [150], None]), ("'windows[2]' must be [earliest, latest] or null",)),
        (_with(windows=[[0, 200], "all day", None, None]), ("'windows[1]'",)),
        (_with(windows=[[0, 200], None, [150, "late"], None]), ("'windows[2]'",)),
        (_with(windows=[None, None, None]), ("'windows' must be a list of 4 entries",)),
        (_with(windows={"2": [0, 1]}), ("'windows' must be a list of 4 entries",)),
        (_with(windows=[None, None, [300, 150], None]), ("window of node 2 ends before it starts",)),
        (_with(service=[0, 0, 0]), ("'service' must be a list of 4 numbers",)),
        (_with(service=[0, 0, "slow", 0]), ("'service' entries must be numbers",)),
        (_with(service=[0, 0, -1, 0]), ("service_s must be finite and >= 0",)),
        (_with(start="1"), ("'start' must be a node index",)),
        (_with(start=True), ("'start' must be a node index",)),
        (_with(start=9), ("start must be a node index in 0..3",)),
        (_with(end="fixed"), ("'end' must be 'return', 'open' or {\"node\": k}",)),
        (_with(end=3), ("'end' must be",)),
        (_with(end={"node": "3"}), ("'end.node' must be a node index",)),
        (_with(end={}), ("'end.node' must be a node index",)),
        (_with(end={"node": 7}), ("end_node must be a node index in 0..3",)),
        (_with(end={"node": 1}), ("end_node equals start",)),
        (_with(coords=[[0, 0], [1, 1]]), ("coords must have shape (4, 2)",)),
        (_with(coords=[[0, 0], [1, 0], [1, 1], [0, "north"]]), ("p.json:",)),
    ],
)
def test_json_errors_name_the_field(data: dict, fragments: tuple[str, ...]) -> None:
    _dict_error(data, *fragments)


def test_json_file_errors_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad_end.json", json.dumps(_with(end="sideways")))
    _format_error(path, "'end' must be")
