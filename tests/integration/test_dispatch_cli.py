"""`routing dispatch FILE` on real benchmark instances: a checked plan, every customer assigned, a small
gap to the best known; bad input exits 2 with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing_api.cli import main as cli_main


@pytest.mark.shared_data
@pytest.mark.parametrize(("rel", "max_gap"), [("benchmarks/solomon_vrptw/C101.txt", 1.0),
                                              ("benchmarks/solomon_vrptw/R101.txt", 3.0),
                                              ("benchmarks/cvrplib/A/A-n32-k5.vrp", 2.0)])  # fmt: skip
def test_dispatch_plans_benchmark_instances(shared_data: Path, rel: str, max_gap: float,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert cli_main(["dispatch", str(shared_data / rel), "--time-limit-ms", "700", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["feasible"] and out["violations"] == [] and out["unassigned"] == {}
    served = sorted(c for r in out["routes"] for c in r)
    assert served == list(range(1, out["customers"] + 1))
    assert out["vehicles_used"] <= out["vehicles_available"]
    assert out["gap_percent"] is not None and -0.01 <= out["gap_percent"] <= max_gap


def test_dispatch_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dispatch", str(tmp_path / "nope.txt")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.vrp"
    bad.write_text("NAME : x\nTYPE : CVRP\nDIMENSION : abc\n")
    assert cli_main(["dispatch", str(bad)]) == 2
    assert "bad.vrp" in capsys.readouterr().err
    assert cli_main(["dispatch", str(bad), "--time-limit-ms", "1"]) == 2
    assert "--time-limit-ms" in capsys.readouterr().err
