"""``routing replay`` and ``routing export-requests`` on bad input: exit status 2 and a message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing_api.cli import main
from tests.slow_http_server import slow_server

ROW = ("07290D3599E7A0D62097A346EFCC1FB5,E7750A37CAB07D0DFF0AF7E3573AC141,2013-01-01 00:00:00,2013-01-01 00:02:00,"
       "120,0.44,-73.956528,40.716976,-73.962440,40.715008,CSH,3.50,0.50,0.50,0.00,0.00,4.50")  # fmt: skip


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"received_at": "2026-11-30T08:00:00Z", "request": {"sleep_s": 0}}) + "\n")
    return path


def test_missing_input_file(capsys, tmp_path: Path) -> None:
    code, err = _run(capsys, "replay", str(tmp_path / "nope.jsonl"), "--report", str(tmp_path / "r.json"))
    assert code == 2 and "error: input file not found" in err and "Traceback" not in err


def test_bad_format(capsys, tmp_path: Path, log_file: Path) -> None:
    code, err = _run(capsys, "replay", str(log_file), "--format", "csv", "--report", str(tmp_path / "r.json"))
    assert code == 2 and "invalid choice: 'csv'" in err
    other = tmp_path / "log.txt"
    other.write_text("x")
    code, err = _run(capsys, "replay", str(other), "--report", str(tmp_path / "r.json"))
    assert code == 2 and "error: cannot tell the format of" in err and "--format jsonl or nyc-taxi" in err


def test_bad_jsonl_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"received_at": "2026-11-30T08:00:00Z", "request": {}}\n{"received_at": 5, "request": {}}\n')
    code, err = _run(capsys, "replay", str(path), "--report", str(tmp_path / "r.json"))
    assert code == 2 and f"error: {path}:2: field 'received_at'" in err


@pytest.mark.parametrize(
    ("rows", "message"),
    [(ROW + "\n" + ROW.replace(",CSH,", ",CSH,,"), ":2: expected 17 columns"),
     (ROW.replace("2013-01-01 00:02:00", "soon"), ":1: column dropoff_datetime: not a time"),
     (ROW.replace("40.716976", "4O.7"), ":1: column pickup_latitude: not a number")],
)  # fmt: skip
def test_bad_csv_rows(capsys, tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(rows + "\n")
    # the CSV is read before the service is asked anything: no server at this URL is needed
    code, err = _run(capsys, "replay", str(path), "--format", "nyc-taxi", "--url", "http://127.0.0.1:9",
                     "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert code == 2 and message in err and err.startswith("error: ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--speed", "0"], "error: --speed must be a positive number"),
     (["--speed", "fast"], "argument --speed: invalid float value"),
     (["--duration", "-5"], "error: --duration must be positive"),
     (["--concurrency-limit", "0"], "error: --concurrency-limit must be >= 1"),
     (["--url", "localhost:8000"], "error: --url must start with http://"),
     (["--chart", "chart.png"], "error: --chart must end with .html or .htm"),
     (["--start-offset", "99999"], "error: no request falls inside the replay window")],
)  # fmt: skip
def test_bad_options(capsys, tmp_path: Path, log_file: Path, extra: list[str], message: str) -> None:
    code, err = _run(capsys, "replay", str(log_file), "--report", str(tmp_path / "r.json"), *extra)
    assert code == 2 and message in err


def test_report_folder_must_exist(capsys, tmp_path: Path, log_file: Path) -> None:
    code, err = _run(capsys, "replay", str(log_file), "--report", str(tmp_path / "no" / "r.json"))
    assert code == 2 and "error: --report: folder" in err
    code, err = _run(capsys, "replay", str(log_file), "--report", str(tmp_path / "r.txt"))
    assert code == 2 and "error: --report must end with .json" in err


def test_nyc_bad_map_bbox(capsys, tmp_path: Path) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(ROW + "\n")
    code, err = _run(capsys, "replay", str(path), "--map-bbox", "1,2,3", "--report", str(tmp_path / "r.json"))
    assert code == 2 and "error: --map-bbox must be four numbers" in err


def test_nyc_unreachable_service(capsys, tmp_path: Path) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(ROW + "\n")
    code, err = _run(capsys, "replay", str(path), "--url", "http://127.0.0.1:9", "--report", str(tmp_path / "r.json"))
    assert code == 2 and "error: cannot reach the service at http://127.0.0.1:9" in err


def test_a_good_replay_writes_report_and_chart(capsys, tmp_path: Path, log_file: Path) -> None:
    report, chart = tmp_path / "r.json", tmp_path / "c.html"
    with slow_server(sleep_s=0.0) as (url, _):
        code = main(["replay", str(log_file), "--url", url, "--report", str(report), "--chart", str(chart),
                     "--fail-on-errors"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "latency ms p50" in out
    data = json.loads(report.read_text())
    assert data["sent"] == data["ok"] == 1 and data["config"]["format"] == "jsonl"
    assert "<svg" in chart.read_text()


def test_fail_on_errors_exits_1(capsys, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"received_at": "2026-11-30T08:00:00Z", "request": {"sleep_s": 0, "status": 500}}))
    with slow_server() as (url, _):
        code = main(["replay", str(path), "--url", url, "--report", str(tmp_path / "r.json"), "--fail-on-errors"])
    assert code == 1 and "1 of 1 requests were not answered 200" in capsys.readouterr().err


def test_export_requests_bad_input(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _run(capsys, "export-requests", "--since", "last tuesday", "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "argument --since: not an ISO 8601 time" in err
    code, err = _run(capsys, "export-requests", "--limit", "0", "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "argument --limit: must be a whole number >= 1" in err
    code, err = _run(capsys, "export-requests", "--since", "2026-11-30T10:00", "--until", "2026-11-30T09:00",
                     "--out", str(tmp_path / "x.jsonl"))  # fmt: skip
    assert code == 2 and "error: --until must be later than --since" in err
    monkeypatch.setenv("ROUTING_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    code, err = _run(capsys, "export-requests", "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "error: database not initialised: run `routing db upgrade` first" in err
    code, err = _run(capsys, "export-requests", "--out", str(tmp_path / "no" / "x.jsonl"))
    assert code == 2 and "error: --out: folder" in err
