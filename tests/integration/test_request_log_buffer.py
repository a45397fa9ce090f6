"""The request log's write buffer against a real PostgreSQL that goes away (a TCP proxy is cut).

Rows wait in memory while the database is unreachable, are written when it returns, the
oldest are dropped when the buffer is full, and one bad row never blocks the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine, text

import migrations
from graph_store.repository import make_engine
from routing_api.request_log import PersistenceUnavailable, RequestLog
from tests.proxy_process import ProxyProcess

pytestmark = pytest.mark.postgres

WHEN = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
def database(postgres_url: str) -> Iterator[tuple[Engine, Engine, ProxyProcess]]:
    """(engine straight to the test database, engine through a proxy that can be cut, the proxy)."""
    direct = make_engine(postgres_url)
    migrations.upgrade(direct)
    parts = urlsplit(postgres_url)
    proxy = ProxyProcess((parts.hostname or "127.0.0.1", parts.port or 5432))
    userinfo = parts.netloc.rpartition("@")[0]
    via = urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}"))
    proxied = make_engine(via)
    try:
        yield direct, proxied, proxy
    finally:
        proxied.dispose()
        direct.dispose()
        proxy.close()


def _record(log: RequestLog, route_id: str, driver_id: str = "van-1") -> None:
    request = {"driver_id": driver_id, "stops": [{"id": "a"}, {"id": "b"}]}
    response = {"route_id": route_id, "order": ["b", "a"], "cache": "miss", "total_duration_s": 12.5,
                "timings_ms": {"total": 3.0}, "versions": {"graph": 1, "traffic_epoch": 0, "model": "m",
                                                             "backend": "onnxruntime"}}  # fmt: skip
    log.record(route_id=route_id, driver_id=driver_id, received_at=WHEN, request=request, response=response,
               status=200)  # fmt: skip


def _stored_routes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT route_id FROM route_requests ORDER BY route_id")).scalars())


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < until, f"{what}: not within {timeout_s} s"
        time.sleep(0.02)


def test_rows_wait_while_the_database_is_down_and_are_written_when_it_returns(database) -> None:
    direct, proxied, proxy = database
    log = RequestLog(proxied, retry_initial_s=0.05, retry_cap_s=0.2)
    log.start()
    try:
        _record(log, "r-before")
        _wait(lambda: log.stats()["written"] == 1, "first row written")
        proxy.cut()
        for i in range(5):
            _record(log, f"r-{i}")
        log.record_position("van-1", 60.17, 24.94, WHEN, 5.0, 90.0)
        _wait(lambda: log.stats()["failures"] >= 2, "retries while down")
        stats = log.stats()
        assert stats["buffered"] == 6 and stats["state"] == "retrying" and stats["dropped"] == 0
        assert log.get("r-3") is not None and log.get("r-3").response["order"] == ["b", "a"]  # type: ignore[union-attr]
        with pytest.raises(PersistenceUnavailable):
            log.drivers()
        assert _stored_routes(direct) == ["r-before"]
        proxy.restore()
        _wait(lambda: log.stats()["buffered"] == 0, "buffer written after the database returned")
        assert _stored_routes(direct) == ["r-0", "r-1", "r-2", "r-3", "r-4", "r-before"]
        assert log.stats()["state"] == "ok" and log.stats()["written"] == 7
        (driver,) = log.drivers()
        assert driver["driver_id"] == "van-1" and driver["last_position"]["lat"] == pytest.approx(60.17)
        stored = log.get("r-3")  # now read from the database
        assert stored is not None and stored.status == 200 and stored.request["stops"] == [{"id": "a"}, {"id": "b"}]
    finally:
        log.close()


def test_a_full_buffer_drops_its_oldest_rows(database) -> None:
    direct, proxied, proxy = database
    log = RequestLog(proxied, buffer_limit=3, retry_initial_s=0.05, retry_cap_s=0.2)
    proxy.cut()
    for i in range(5):  # no writer thread: each record tries at once, fails, stays queued
        _record(log, f"r-{i}")
    stats = log.stats()
    assert stats["buffered"] == 3 and stats["dropped"] == 2 and stats["failures"] == 5
    proxy.restore()
    assert log.flush() == 3
    assert _stored_routes(direct) == ["r-2", "r-3", "r-4"]
    assert log.get("r-0") is None and log.get("r-4") is not None
    log.close()


def test_a_row_the_database_refuses_is_dropped_without_blocking_the_others(database) -> None:
    direct, _, _ = database
    log = RequestLog(direct)
    _record(log, "good-1")
    _record(log, "bad", driver_id="d" * 500)  # longer than the column: PostgreSQL refuses it
    _record(log, "good-2")
    assert log.stats()["rejected"] == 1 and log.stats()["buffered"] == 0
    assert _stored_routes(direct) == ["good-1", "good-2"]


def test_a_route_row_written_twice_is_stored_once(database) -> None:
    direct, _, _ = database
    log = RequestLog(direct)
    _record(log, "same")
    _record(log, "same")  # as after a commit whose reply was lost: written again
    assert _stored_routes(direct) == ["same"] and log.stats()["rejected"] == 0
