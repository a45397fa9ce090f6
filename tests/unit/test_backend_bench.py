"""`routing bench backends` helpers: turn-taking timing rounds and the issue's goal ratios (no timings asserted)."""

from __future__ import annotations

from gnn_model.backend_bench import BATCHES, SIZES, _time_rounds, goal_ratios


def test_backends_take_turns_in_every_round() -> None:
    from itertools import groupby

    calls: list[str] = []
    times = _time_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, min_s=0.0, max_rounds=10)
    assert calls[:2] == ["a", "b"]  # the warm-up call of each
    turns = [(name, len(list(run))) for name, run in groupby(calls[2:])]
    assert [name for name, _ in turns] == ["a", "b"] * (len(turns) // 2) and len(turns) >= 6  # >= 3 rounds
    assert all(size >= 2 for _, size in turns)  # an untimed call, then timed ones
    for name, (wall, cpu) in times.items():
        assert len(wall) == len(cpu) == sum(size - 1 for n, size in turns if n == name)
        assert all(t >= 0 for t in wall + cpu)


def test_goal_ratios_from_rows() -> None:
    # Per-problem cost: torch 4 ms, ONNX Runtime 1 ms, int8 0.8 ms at batch 32; batch 1 costs twice as much.
    per_problem = {"torch": 4.0, "onnxruntime": 1.0, "onnxruntime-int8": 0.8}
    rows = [
        {"backend": name, "n_nodes": n, "batch": b, "p50_ms": cost * b * (2.0 if b == 1 else 1.0),
         "cpu_ms_p50": cost * b * (4.0 if b == 1 else 1.0), "problems_per_s": 0.0}
        for name, cost in per_problem.items() for n in SIZES for b in BATCHES
    ]  # fmt: skip
    ratios = goal_ratios(rows)
    assert set(ratios) == {f"{basis} n={n}" for basis in ("wall", "cpu") for n in SIZES}
    wall = ratios["wall n=50"]
    assert wall["onnxruntime_vs_torch"] == 4.0 and wall["int8_vs_fp32"] == 1.25
    assert wall["batch32_cost_vs_batch1[onnxruntime]"] == 0.5
    assert ratios["cpu n=100"]["batch32_cost_vs_batch1[torch]"] == 0.25
    # A backend missing from the run leaves its ratios out instead of failing.
    partial = goal_ratios([r for r in rows if r["backend"] != "onnxruntime-int8"])
    assert "int8_vs_fp32" not in partial["wall n=20"] and "onnxruntime_vs_torch" in partial["wall n=20"]
