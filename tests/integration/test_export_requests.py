"""``routing export-requests`` on SQLite and real PostgreSQL: order, time filters across time zones, limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import migrations
from graph_store.repository import make_engine
from routing_api.cli import main
from routing_api.export_requests import iter_logged
from routing_api.request_log import RequestLog

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
HELSINKI = timezone(timedelta(hours=2))


def _body(i: int) -> dict:
    return {"driver_id": f"van-{i}", "start": {"lat": 60.17, "lon": 24.94}, "end": "return", "depart_at": None,
            "stops": [{"id": f"s{i}", "lat": 60.171, "lon": 24.941, "service_s": 0.0, "window": None}],
            "options": {"time_budget_ms": 50.0}}  # fmt: skip


@pytest.fixture
def logged(database_url: str) -> tuple[str, list[datetime]]:
    engine = make_engine(database_url)
    migrations.upgrade(engine)
    log = RequestLog(engine)  # no writer thread: each record is written at once
    # written out of order, some with a +02:00 offset: export sorts by the instant
    offsets_s = [30.0, 0.0, 10.5, 20.0, 40.0]
    times = []
    for i, off in enumerate(offsets_s):
        when = T0 + timedelta(seconds=off)
        if i % 2:
            when = when.astimezone(HELSINKI)
        times.append(when)
        log.record(route_id=f"r{i}", driver_id=f"van-{i}", received_at=when, request=_body(i),
                   response=None if i == 3 else {"cache": "miss"}, status=422 if i == 3 else 200,
                   error_kind="off_map" if i == 3 else None)  # fmt: skip
    log.flush()
    engine.dispose()
    return database_url, times


def test_export_order_filters_and_limit(logged: tuple[str, list[datetime]]) -> None:
    url, times = logged
    engine = make_engine(url)
    try:
        rows = list(iter_logged(engine))
        assert [r["route_id"] for r in rows] == ["r1", "r2", "r3", "r0", "r4"]
        assert [datetime.fromisoformat(r["received_at"]) for r in rows] == sorted(times)
        assert all(r["received_at"].endswith("+00:00") for r in rows)
        assert rows[2]["status"] == 422 and rows[2]["error_kind"] == "off_map" and rows[0]["cache"] == "miss"
        assert rows[0]["request"] == _body(1)
        since = T0 + timedelta(seconds=10.5)
        assert [r["route_id"] for r in iter_logged(engine, since=since)] == ["r2", "r3", "r0", "r4"]
        assert [r["route_id"] for r in iter_logged(engine, since=since.astimezone(HELSINKI),
                                                   until=T0 + timedelta(seconds=30))] == ["r2", "r3"]  # fmt: skip
        assert [r["route_id"] for r in iter_logged(engine, limit=2)] == ["r1", "r2"]
    finally:
        engine.dispose()


def test_export_cli_writes_jsonl(logged: tuple[str, list[datetime]], tmp_path: Path, capsys,
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    url, _ = logged
    monkeypatch.setenv("ROUTING_DATABASE_URL", url)
    out = tmp_path / "log.jsonl"
    assert main(["export-requests", "--since", "2026-11-30T10:00:10+02:00", "--limit", "3", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["route_id"] for r in rows] == ["r2", "r3", "r0"]
    assert "exported 3 requests" in capsys.readouterr().err
    assert main(["export-requests", "--until", "2026-11-30T08:00:05", "--out", "-"]) == 0  # naive = UTC
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["route_id"] for line in printed] == ["r1"]
