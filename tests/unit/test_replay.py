"""The open-loop replay engine against a tiny local HTTP server that answers slowly.

No assertion here is an upper bound on time: the server's sleeps give lower bounds (a request
answered after a 0.5 s sleep took at least 0.5 s), and the open-loop property is checked by what
the server saw (how many requests it held at once), not by a stopwatch.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driver_app_stub.replay import ReplayConfig, ReplayError, ReplayRecord, read_jsonl, replay, schedule, write_jsonl
from tests.slow_http_server import slow_server

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _records(offsets_s: list[float], **body: object) -> list[ReplayRecord]:
    return [ReplayRecord(T0 + timedelta(seconds=o), {"driver_id": f"d{i}", **body}) for i, o in enumerate(offsets_s)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_schedule_sorts_scales_and_cuts() -> None:
    recs = _records([4.0, 0.0, 2.0, 2.0, 10.0, 6.0])
    cfg = ReplayConfig(url="http://x", speed=2.0)
    plan = schedule(recs, cfg)
    assert [o for o, _ in plan] == [0.0, 1.0, 1.0, 2.0, 3.0, 5.0]
    assert [r.body["driver_id"] for _, r in plan] == ["d1", "d2", "d3", "d0", "d5", "d4"]  # ties keep file order
    cut = schedule(recs, ReplayConfig(url="http://x", speed=2.0, duration_s=3.0))
    assert [o for o, _ in cut] == [0.0, 1.0, 1.0, 2.0]  # offset 3.0 is not < duration
    skipped = schedule(recs, ReplayConfig(url="http://x", speed=1.0, start_offset_s=3.0))
    assert [o for o, _ in skipped] == [1.0, 3.0, 7.0]


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"speed": 0.0}, "--speed"), ({"speed": float("nan")}, "--speed"), ({"duration_s": 0.0}, "--duration"),
     ({"concurrency_limit": 0}, "--concurrency-limit"), ({"start_offset_s": -1.0}, "--start-offset"),
     ({"url": "127.0.0.1:8000"}, "--url"), ({"timeout_s": 0.0}, "--timeout")],
)  # fmt: skip
def test_config_validation_names_the_option(kw: dict, message: str) -> None:
    args = {"url": "http://127.0.0.1:1", **kw}
    with pytest.raises(ReplayError, match=message):
        ReplayConfig(**args)


def test_slow_server_does_not_slow_the_send_schedule() -> None:
    # 20 requests due within 0.19 s; the server holds each for 0.5 s. Open loop: all 20 are at the
    # server at once. A client that waited for answers would never have more than its pool in flight.
    offsets = [i * 0.01 for i in range(20)]
    with slow_server(sleep_s=0.5) as (url, log):
        result = asyncio.run(replay(_records(offsets), ReplayConfig(url=url, speed=1.0)))
    report = result.report()
    assert report["sent"] == report["ok"] == 20 and report["errors"] == {}
    assert log.max_in_flight == 20
    # requests reached the server in schedule order, each sent before the first answer could exist
    assert [b["driver_id"] for b in log.bodies] == [f"d{i}" for i in range(20)]
    assert max(log.arrivals) - min(log.arrivals) < 0.5
    for s in result.samples:
        assert s.latency_ms is not None and s.latency_ms >= 500.0  # counted from schedule, includes the sleep
        assert s.sent_s is not None and s.sent_s - s.sched_s < 0.5  # never waited for an earlier answer
    assert report["latency_ms"]["count"] == 20 and report["latency_ms"]["p50"] >= 500.0


def test_latency_counts_from_the_scheduled_time_under_a_concurrency_limit() -> None:
    # 10 requests all due at t=0, at most 2 in flight, 0.5 s each: they go out in 5 waves. Counted from
    # the schedule, wave k (0-based) waits k x 0.5 s before it is even sent, so its latency is >= (k+1) x 0.5 s.
    with slow_server(sleep_s=0.5) as (url, log):
        result = asyncio.run(replay(_records([0.0] * 10), ReplayConfig(url=url, concurrency_limit=2)))
    report = result.report()
    assert report["ok"] == 10 and log.max_in_flight == 2
    latencies = sorted(s.latency_ms for s in result.samples)  # type: ignore[type-var]
    for i, lat in enumerate(latencies):
        assert lat >= 500.0 * (i // 2 + 1), (i, lat)
    assert report["latency_ms"]["max"] >= 2500.0
    # the 8 requests that had to wait for a slot went out >= 0.5 s behind schedule: late sends
    assert report["late_sends"] >= 8
    assert report["send_lag_ms"]["max"] >= 2000.0  # the last wave waited for 4 earlier ones


def test_errors_are_counted_by_kind_and_cache_hits_by_answer() -> None:
    recs = [ReplayRecord(T0, {"sleep_s": 0, "cache": "hit"}), ReplayRecord(T0, {"sleep_s": 0, "cache": "miss"}),
            ReplayRecord(T0, {"sleep_s": 0, "cache": "hit"}),
            ReplayRecord(T0, {"sleep_s": 0, "status": 503, "kind": "queue_full"}),
            ReplayRecord(T0, {"sleep_s": 0, "status": 422, "kind": "invalid"}),
            ReplayRecord(T0, {"sleep_s": 2, "status": 200})]  # fmt: skip
    with slow_server() as (url, log):
        result = asyncio.run(replay(recs, ReplayConfig(url=url, timeout_s=0.5, token="rt_secret")))
    report = result.report()
    assert report["sent"] == 6 and report["ok"] == 3
    assert report["errors"] == {"http_422": 1, "http_503": 1, "timeout": 1}
    assert report["error_details"] == {"http_422:invalid": 1, "http_503:queue_full": 1, "timeout:ReadTimeout": 1}
    assert report["cache_hit_ratio"] == pytest.approx(2 / 3, abs=1e-4)
    assert all(h.get("authorization") == "Bearer rt_secret" for h in log.headers)
    assert report["config"]["auth"] is True and "rt_secret" not in json.dumps(report)


def test_connection_errors_are_counted_not_raised() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result = asyncio.run(replay(_records([0.0, 0.01, 0.02]), ReplayConfig(url=url)))
    report = result.report()
    assert report["sent"] == 3 and report["ok"] == 0 and report["errors"] == {"connect_error": 3}
    assert list(report["error_details"]) == ["connect_error:ConnectionRefusedError"]
    assert report["latency_ms"]["p50"] is None and report["throughput_rps"] is None


def test_duration_stops_scheduling() -> None:
    with slow_server(sleep_s=0.0) as (url, log):
        result = asyncio.run(replay(_records([0.0, 0.1, 0.2, 5.0, 9.0]), ReplayConfig(url=url, duration_s=0.3)))
    assert result.report()["sent"] == 3 and len(log.bodies) == 3 and result.scheduled == 3


def test_jsonl_round_trip_and_errors(tmp_path: Path) -> None:
    recs = _records([0.0, 1.5])
    path = tmp_path / "log.jsonl"
    write_jsonl(path, recs)
    assert read_jsonl(path) == recs
    bad = tmp_path / "bad.jsonl"
    for text, message in (
        ('{"received_at": "2026-11-30T08:00:00Z", "request": {}}\nnot json\n', r"bad.jsonl:2: not a JSON object"),
        ('{"request": {}}\n', "bad.jsonl:1: missing field 'received_at'"),
        ('{"received_at": "yesterday", "request": {}}\n', "bad.jsonl:1: field 'received_at': not an ISO 8601"),
        ('{"received_at": "2026-11-30T08:00:00", "request": [1]}\n', "field 'request' must be a JSON object"),
        ("\n\n", "no requests"),
    ):
        bad.write_text(text)
        with pytest.raises(ReplayError, match=message):
            read_jsonl(bad)
    with pytest.raises(ReplayError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_ctrl_c_writes_a_partial_report(tmp_path: Path) -> None:
    log_file = tmp_path / "log.jsonl"
    write_jsonl(log_file, _records([i * 0.2 for i in range(300)], sleep_s=0.05))  # 60 s of requests
    report = tmp_path / "report.json"
    with slow_server() as (url, log):
        proc = subprocess.Popen([sys.executable, "-m", "routing_api.cli", "replay", str(log_file), "--url", url,
                                 "--report", str(report)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "ROUTING_TOKEN": ""})  # fmt: skip
        deadline = time.monotonic() + 60
        while len(log.bodies) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["scheduled"] == 300
    assert 3 <= data["sent"] < 300 and data["sent"] == data["ok"] + data["unanswered"] + sum(data["errors"].values())
    assert "partial report" in out.decode()
