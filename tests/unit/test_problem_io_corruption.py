"""Damaged problem files (hypothesis): whatever happens to the bytes of a valid TSPLIB or JSON
problem, ``read_problem`` returns a valid problem or raises ``ProblemFormatError`` naming the
file: never another exception (which the CLI would show as a traceback)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing_core.problem import Problem
from routing_core.problem_io import ProblemFormatError, read_problem

TSP = "\n".join([
    "NAME : five", "TYPE : TSP", "DIMENSION : 5", "EDGE_WEIGHT_TYPE : EUC_2D", "NODE_COORD_SECTION",
    "1 0 0", "2 3 4", "3 0 1.5", "4 10.0 2.5e0", "5 -7 8", "EOF", "",
]).encode()  # fmt: skip
JSON = json.dumps({
    "matrix": [[0, 5, 9, None], [4, 0, 3, 8], [9, 2, 0, 6], [7, 8, 5, 0]],
    "windows": [None, [0, 100], [10, 50.5], None], "service": [0, 30, 0, 15], "start": 0, "end": {"node": 3},
}).encode()  # fmt: skip

Edit = tuple[str, int, int]  # (kind, position, byte)
EDITS = st.lists(st.tuples(st.sampled_from(["flip", "delete", "insert", "cut"]), st.integers(0, 10_000),
                           st.integers(0, 255)), min_size=1, max_size=8)  # fmt: skip


def damage(data: bytes, edits: list[Edit]) -> bytes:
    buf = bytearray(data)
    for kind, pos, byte in edits:
        if not buf:
            break
        at = pos % len(buf)
        if kind == "flip":
            buf[at] ^= byte or 1
        elif kind == "delete":
            del buf[at]
        elif kind == "insert":
            buf.insert(at, byte)
        else:
            del buf[at:]
    return bytes(buf)


def _read(data: bytes, suffix: str) -> Problem | ProblemFormatError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"damaged{suffix}"
        path.write_bytes(data)
        try:
            return read_problem(path)
        except ProblemFormatError as exc:
            assert str(exc).startswith(str(path)), exc  # the message names the file
            return exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=EDITS, suffix=st.sampled_from([".tsp", ".json"]))
def test_a_damaged_problem_file_is_read_or_refused_with_a_format_error(edits: list[Edit], suffix: str) -> None:
    result = _read(damage(TSP if suffix == ".tsp" else JSON, edits), suffix)
    if isinstance(result, Problem):
        assert result.n_nodes >= 1  # built through Problem's own validation


def test_the_undamaged_files_are_read() -> None:
    assert isinstance(_read(TSP, ".tsp"), Problem) and isinstance(_read(JSON, ".json"), Problem)
