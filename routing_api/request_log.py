"""The request log (every route request and its answer) and driver positions, in SQL.

Writes are off the request path, through a bounded in-memory buffer: ``record`` and
``record_position`` only queue a row; a writer thread (``start``) writes what is queued
in batches, as soon as rows arrive. While the database cannot be reached the rows stay
queued and the writer retries with capped exponential backoff (``retry_initial_s``
doubling up to ``retry_cap_s``); a full buffer (``buffer_limit`` rows) drops its oldest
rows, counted. ``stats()`` has the counters (Prometheus ``routing_persist_*``).

Reads see queued rows: ``get`` answers from the buffer first, and ``drivers`` writes the
buffer before it reads (so it raises ``PersistenceUnavailable`` while the database is
down). Without a started writer (scripts, the CLI) ``record`` writes at once in the
caller's thread; a failure leaves the row queued for the next write.

Delivery is at least once: a batch whose commit was lost with its connection is written
again. A route row already stored (same route id) is skipped then; a position may be
stored twice. A row the database refuses for itself (not for being unreachable) is
dropped and counted as ``rejected``, so it cannot block the rows behind it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Engine, Select, func, insert, select
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import sessionmaker

from graph_store.models import DriverPosition, RouteRequestLog

log = logging.getLogger(__name__)

BUFFER_LIMIT = 10_000  # rows waiting for the database, at most
WRITE_BATCH = 500  # rows per transaction
_UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


class PersistenceUnavailable(RuntimeError):
    """The database cannot be reached; queued rows wait for it."""

    retry_after_s: int = 5


@dataclass(frozen=True)
class LoggedRoute:
    route_id: str
    driver_id: str
    received_at: datetime
    request: dict[str, Any]
    response: dict[str, Any] | None
    status: int


@dataclass(frozen=True)
class _Row:
    """One queued write. Route rows keep the request and answer as dicts (JSON is made by the writer)."""

    table: Literal["route", "position"]
    values: dict[str, Any]


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _route_columns(values: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = values["request"]
    response: dict[str, Any] | None = values["response"]
    resp = response or {}
    versions = resp.get("versions") or {}
    return {
        "route_id": values["route_id"], "driver_id": values["driver_id"], "received_at": values["received_at"],
        "request_json": _dumps(request),
        "response_json": _dumps(response) if response else None,
        "status": values["status"], "error_kind": values["error_kind"], "cache": resp.get("cache"),
        "n_stops": len(request.get("stops", [])), "total_duration_s": resp.get("total_duration_s"),
        "timings_json": _dumps(resp["timings_ms"]) if "timings_ms" in resp else None,
        "graph_version": versions.get("graph"), "traffic_epoch": versions.get("traffic_epoch"),
        "model_version": versions.get("model"), "backend": versions.get("backend"),
    }  # fmt: skip


def last_position_per_driver() -> Select[Any]:
    """Each driver's latest position row."""
    last = (
        select(DriverPosition.driver_id, func.max(DriverPosition.id).label("pid"))
        .group_by(DriverPosition.driver_id).subquery()
    )  # fmt: skip
    return select(DriverPosition).join(last, DriverPosition.id == last.c.pid)


def last_route_per_driver(*columns: Any) -> Select[Any]:
    """Each driver's latest answered (status 200) request-log row: ``columns`` of it, or the whole row."""
    last = (
        select(RouteRequestLog.driver_id, func.max(RouteRequestLog.received_at).label("at"))
        .where(RouteRequestLog.status == 200).group_by(RouteRequestLog.driver_id).subquery()
    )  # fmt: skip
    return (
        select(*(columns or (RouteRequestLog,)))
        .join(last, (RouteRequestLog.driver_id == last.c.driver_id) & (RouteRequestLog.received_at == last.c.at))
        .where(RouteRequestLog.status == 200)
    )


class RequestLog:
    """The request log and positions behind a write buffer; see the module docstring."""

    def __init__(self, engine: Engine, *, buffer_limit: int = BUFFER_LIMIT, retry_initial_s: float = 0.5,
                 retry_cap_s: float = 10.0) -> None:  # fmt: skip
        if buffer_limit < 1:
            raise ValueError(f"buffer_limit must be >= 1, got {buffer_limit}")
        if not 0 < retry_initial_s <= retry_cap_s:
            raise ValueError(f"need 0 < retry_initial_s <= retry_cap_s, got {retry_initial_s}, {retry_cap_s}")
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.buffer_limit = buffer_limit
        self.retry_initial_s = retry_initial_s
        self.retry_cap_s = retry_cap_s
        self._lock = threading.Lock()  # the queue, the pending routes, the counters
        self._write_lock = threading.Lock()  # one writer at a time (thread, read barrier, inline)
        self._queue: collections.deque[_Row] = collections.deque()
        self._pending_routes: dict[str, _Row] = {}  # route id -> its row, queued or being written
        self._in_flight = 0  # rows taken from the queue by the write going on
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = 0
        self._failures = 0  # write attempts that failed because the database was unreachable
        self._dropped = 0  # rows dropped because the buffer was full
        self._rejected = 0  # rows the database refused (not for being unreachable)
        self._retrying = False
        self._last_error = ""

    # -- writes ---------------------------------------------------------------------------

    def record(self, *, route_id: str, driver_id: str, received_at: datetime, request: dict[str, Any],
               response: dict[str, Any] | None, status: int, error_kind: str | None = None) -> None:  # fmt: skip
        """Queue one route request and its answer (``response`` None for an error)."""
        row = _Row("route", {"route_id": route_id, "driver_id": driver_id, "received_at": _utc(received_at),
                             "request": request, "response": response, "status": status,
                             "error_kind": error_kind})  # fmt: skip
        self._enqueue(row)

    def record_position(self, driver_id: str, lat: float, lon: float, timestamp: datetime,
                        speed_mps: float | None, heading_deg: float | None) -> None:  # fmt: skip
        """Queue one GPS position."""
        self._enqueue(_Row("position", {"driver_id": driver_id, "lat": lat, "lon": lon, "timestamp": _utc(timestamp),
                                        "speed_mps": speed_mps, "heading_deg": heading_deg,
                                        "received_at": datetime.now(UTC)}))  # fmt: skip

    def _enqueue(self, row: _Row) -> None:
        with self._lock:
            self._queue.append(row)
            if row.table == "route":
                self._pending_routes[row.values["route_id"]] = row
            self._trim()
        if self.writing:
            self._wake.set()
        else:
            with contextlib.suppress(PersistenceUnavailable):  # queued and counted: the next flush writes it
                self.flush()

    def _trim(self) -> None:
        """Drop the oldest queued rows past ``buffer_limit`` (holding ``_lock``)."""
        while len(self._queue) > self.buffer_limit:
            old = self._queue.popleft()
            self._forget(old)
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("persistence buffer full (%d rows): %d oldest rows dropped so far", self.buffer_limit,
                            self._dropped)  # fmt: skip

    def _forget(self, row: _Row) -> None:
        if row.table == "route" and self._pending_routes.get(row.values["route_id"]) is row:
            del self._pending_routes[row.values["route_id"]]

    def flush(self) -> int:
        """Write every queued row now; the number written. Raises ``PersistenceUnavailable``
        (the rows stay queued) when the database cannot be reached."""
        written = 0
        with self._write_lock:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(WRITE_BATCH, len(self._queue)))]
                    self._in_flight = len(batch)
                    # Only after a failed write can a row already be stored (its commit reply lost).
                    retry = self._retrying
                if not batch:
                    break
                try:
                    stored, refused = self._write(batch, retry)
                except _UNREACHABLE as exc:
                    with self._lock:
                        self._in_flight = 0
                        self._queue.extendleft(reversed(batch))
                        self._trim()
                        self._failures += 1
                        self._retrying = True
                        self._last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    raise PersistenceUnavailable(f"database unreachable: {self._last_error}") from exc
                with self._lock:
                    self._in_flight = 0
                    for row in batch:
                        self._forget(row)
                    self._written += stored
                    self._rejected += refused
                    self._retrying = False
                written += stored
        return written

    def _write(self, batch: list[_Row], retry: bool) -> tuple[int, int]:
        """Write ``batch`` in one transaction; if the database refuses it (a bad row), row by row.
        Returns (rows stored, rows refused); raises the ``_UNREACHABLE`` errors.

        The check for rows stored already (a commit whose reply was lost) runs on a retry, or when the
        database refuses the batch (a duplicate key), not on every write."""
        for skip_stored in (True,) if retry else (False, True):
            try:
                return self._insert(batch, skip_stored), 0
            except _UNREACHABLE:
                raise
            except Exception as exc:  # a bad row (refused by the database, or not serialisable)
                refusal = exc
        log.warning("request log batch refused (%s); writing it row by row", type(refusal).__name__)
        stored = refused = 0
        for row in batch:
            try:
                stored += self._insert([row], True)
            except _UNREACHABLE:
                raise
            except Exception as exc:
                refused += 1
                log.error("request log row dropped, it cannot be stored: %s", exc)
        return stored, refused

    def _insert(self, rows: list[_Row], skip_stored: bool = True) -> int:
        routes = [_route_columns(r.values) for r in rows if r.table == "route"]
        positions = [r.values for r in rows if r.table == "position"]
        with self.sessions.begin() as session:
            if routes and skip_stored:
                # A batch written before, whose commit reply was lost, is not written twice.
                stored = set(session.scalars(select(RouteRequestLog.route_id).where(
                    RouteRequestLog.route_id.in_([r["route_id"] for r in routes]))))  # fmt: skip
                routes = [r for r in routes if r["route_id"] not in stored]
            if routes:
                session.execute(insert(RouteRequestLog), routes)
            if positions:
                session.execute(insert(DriverPosition), positions)
        return len(routes) + len(positions)

    # -- the writer thread --------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """Whether the writer thread runs (else writes happen in the caller's thread)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self.writing:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer, then try once more to write what is queued (rows still queued are lost, logged)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.flush()
        except PersistenceUnavailable as exc:
            log.error("request log: %d rows not written at shutdown: %s", self.stats()["buffered"], exc)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
                attempt = 0
            except PersistenceUnavailable as exc:
                delay = min(self.retry_cap_s, self.retry_initial_s * 2.0**attempt)
                attempt = min(attempt + 1, 30)
                if attempt == 1:
                    log.warning("request log: %s; %d rows queued, retrying", exc, self.stats()["buffered"])
                self._stop.wait(delay)  # new rows do not cut the backoff short
                self._wake.set()
            except Exception:  # a bug must not end the writer: the rows stay queued
                log.exception("request log writer failed")
                self._stop.wait(self.retry_cap_s)

    def stats(self) -> dict[str, Any]:
        """Counters: rows ``buffered`` (waiting), ``written``, ``dropped`` (buffer full), ``rejected``
        (refused by the database); ``failures`` (write attempts that found the database unreachable);
        ``state`` ok | retrying."""
        with self._lock:
            return {"buffered": len(self._queue) + self._in_flight, "written": self._written, "dropped": self._dropped,
                    "rejected": self._rejected, "failures": self._failures,
                    "state": "retrying" if self._retrying else "ok", "last_error": self._last_error}  # fmt: skip

    # -- reads ----------------------------------------------------------------------------

    def get(self, route_id: str) -> LoggedRoute | None:
        with self._lock:
            row = self._pending_routes.get(route_id)
        if row is not None:
            v = row.values
            return LoggedRoute(v["route_id"], v["driver_id"], v["received_at"], v["request"], v["response"],
                               v["status"])  # fmt: skip
        with self.sessions() as session:
            stored = session.get(RouteRequestLog, route_id)
            if stored is None:
                return None
            return LoggedRoute(stored.route_id, stored.driver_id, _utc(stored.received_at),
                               json.loads(stored.request_json),
                               json.loads(stored.response_json) if stored.response_json else None,
                               stored.status)  # fmt: skip

    def drivers(self) -> list[dict[str, Any]]:
        """Every driver seen: last position and latest successful route (queued rows written first)."""
        self.flush()
        with self.sessions() as session:
            positions = {p.driver_id: p for p in session.scalars(last_position_per_driver())}
            routes = {r.driver_id: r for r in session.scalars(last_route_per_driver())}
        out = []
        for driver in sorted(set(positions) | set(routes)):
            p = positions.get(driver)
            r = routes.get(driver)
            out.append({
                "driver_id": driver,
                "last_position": None if p is None else {
                    "lat": p.lat, "lon": p.lon, "timestamp": _utc(p.timestamp),
                    "speed_mps": p.speed_mps, "heading_deg": p.heading_deg},
                "current_route_id": r.route_id if r else None,
                "route_received_at": _utc(r.received_at) if r else None,
            })  # fmt: skip
        return out
