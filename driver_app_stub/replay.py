"""Open-loop replay of recorded route requests against the API (``POST /v1/routes``).

Records are sent in time order: record i goes out at ``(t_i - t_0) / speed`` seconds after the
start, whatever happened to the records before it (open loop), each as its own asyncio task
over an ``httpx.AsyncClient`` with no connection limit, so a slow server cannot slow the send
schedule. Latency is measured from the *scheduled* send time, not from when the request went
out, so queueing in the client or the server is never hidden (no coordinated omission).

A send is *late* when its request headers went on the wire more than ``late_ms`` after its
scheduled time: the event loop was busy, a connection took long to open, or
``concurrency_limit`` requests were already in flight (it then waits for one to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from driver_app_stub.latency_report import RELATIVE_PRECISION, ChartPoint, LatencyHistogram

ROUTES_PATH = "/v1/routes"
# An idle connection is dropped after this long, well before a server closes it (uvicorn: 5 s): reusing
# one the server is closing at that moment gets a connection reset, an error the service did not make.
KEEPALIVE_EXPIRY_S = 1.0


class ReplayError(Exception):
    """Something the user can fix: a bad file, row or option, an unreachable service; the message says what."""


@dataclass(frozen=True)
class ReplayRecord:
    """One request to re-send: its recorded time and its ``POST /v1/routes`` body."""

    at: datetime
    body: dict[str, Any]


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay. ``speed``: recorded seconds per wall second (> 0). ``duration_s``: stop scheduling
    after this many wall seconds. ``start_offset_s``: skip the first recorded seconds.
    ``concurrency_limit``: most requests in flight (None: no limit). ``timeout_s``: per request."""

    url: str
    speed: float = 1.0
    duration_s: float | None = None
    start_offset_s: float = 0.0
    concurrency_limit: int | None = None
    token: str | None = None
    timeout_s: float = 60.0
    late_ms: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ReplayError(f"--url must start with http:// or https://, got {self.url!r}")
        if not (self.speed > 0 and self.speed < float("inf")):
            raise ReplayError(f"--speed must be a positive number, got {self.speed}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ReplayError(f"--duration must be positive (seconds), got {self.duration_s}")
        if not self.start_offset_s >= 0:
            raise ReplayError(f"--start-offset must be >= 0 (seconds), got {self.start_offset_s}")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ReplayError(f"--concurrency-limit must be >= 1, got {self.concurrency_limit}")
        if not self.timeout_s > 0:
            raise ReplayError(f"--timeout must be positive (seconds), got {self.timeout_s}")

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h


@dataclass
class Sample:
    """One scheduled request. Times are seconds after the replay's start (its t0)."""

    index: int
    sched_s: float
    sent_s: float | None = None  # request headers on the wire (or the attempt, when it never got there)
    done_s: float | None = None
    outcome: str | None = None  # "ok", "http_<status>", "timeout", "connect_error", ...; None: unanswered
    detail: str | None = None  # the server's error kind (detail[0].kind), when it sent one
    cache: str | None = None
    late: bool = False

    @property
    def latency_ms(self) -> float | None:
        return None if self.done_s is None else (self.done_s - self.sched_s) * 1000.0


@dataclass
class ReplayResult:
    config: ReplayConfig
    samples: list[Sample]
    wall_s: float
    interrupted: bool
    scheduled: int  # records inside the replay window (what would have been sent without an interrupt)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    def report(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON report: counts, errors by kind, late sends, latency percentiles of the 200s, throughput."""
        sent = [s for s in self.samples if s.sent_s is not None]
        ok = [s for s in sent if s.outcome == "ok"]
        errors = Counter(s.outcome for s in sent if s.outcome not in (None, "ok"))
        details = Counter(f"{s.outcome}:{s.detail}" for s in sent if s.outcome not in (None, "ok") and s.detail)
        hits = sum(1 for s in ok if s.cache == "hit")
        cached = sum(1 for s in ok if s.cache in ("hit", "miss"))
        last_done = max((s.done_s for s in ok if s.done_s is not None), default=None)
        span = (max(s.sched_s for s in sent) - min(s.sched_s for s in sent)) if len(sent) > 1 else None
        cfg = self.config
        settings = {"url": cfg.url, "speed": cfg.speed, "duration_s": cfg.duration_s,
                    "start_offset_s": cfg.start_offset_s, "concurrency_limit": cfg.concurrency_limit,
                    "timeout_s": cfg.timeout_s, "late_ms": cfg.late_ms, "auth": bool(cfg.token)}  # fmt: skip
        return {
            "sent": len(sent),
            "ok": len(ok),
            "errors": dict(sorted(errors.items())),
            "error_details": dict(sorted(details.items())),
            "unanswered": sum(1 for s in sent if s.outcome is None),
            "late_sends": sum(1 for s in sent if s.late),
            "send_lag_ms": _lag_summary(sent),
            "latency_ms": self.histogram.summary(),
            "throughput_rps": round(len(ok) / last_done, 3) if last_done else None,
            "offered_rps": round((len(sent) - 1) / span, 3) if span else None,
            "cache_hit_ratio": round(hits / cached, 4) if cached else None,
            "scheduled": self.scheduled,
            "interrupted": self.interrupted,
            "wall_s": round(self.wall_s, 3),
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "latency_basis": "from the scheduled send time; status 200 answers only",
            "histogram_precision": f"log-linear buckets, relative error <= {RELATIVE_PRECISION:.4%} + 1 us",
            "config": {**settings, **(extra or {})},
        }

    def chart_points(self) -> list[ChartPoint]:
        return [ChartPoint(s.sched_s, s.latency_ms, s.outcome == "ok")  # type: ignore[arg-type]
                for s in self.samples if s.latency_ms is not None]  # fmt: skip


# -- input ---------------------------------------------------------------------------------------


def _lag_summary(sent: Sequence[Sample]) -> dict[str, float | None]:
    """How far behind schedule requests went out (ms): p50, p99, max. Large values mean the client, not the
    server, was the bottleneck (or ``concurrency_limit`` held them back)."""
    lag = LatencyHistogram()
    for s in sent:
        if s.sent_s is not None:
            lag.record((s.sent_s - s.sched_s) * 1000.0)
    return {"p50": _ms(lag.percentile(50)), "p99": _ms(lag.percentile(99)), "max": _ms(lag.max_ms)}


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def parse_time(text: Any, where: str) -> datetime:
    """An ISO 8601 time; naive times are UTC."""
    if not isinstance(text, str):
        raise ReplayError(f"{where}: expected an ISO 8601 time string, got {type(text).__name__}")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"{where}: not an ISO 8601 time: {text[:40]!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def read_jsonl(path: Path) -> list[ReplayRecord]:
    """The request log as ``routing export-requests`` writes it: one JSON object a line with
    ``received_at`` (ISO 8601) and ``request`` (the original ``POST /v1/routes`` body)."""
    records = []
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ReplayError(f"{where}: not a JSON object ({exc})") from None
                if not isinstance(row, dict):
                    raise ReplayError(f"{where}: not a JSON object")
                for key in ("received_at", "request"):
                    if key not in row:
                        raise ReplayError(f"{where}: missing field {key!r}")
                if not isinstance(row["request"], dict):
                    raise ReplayError(f"{where}: field 'request' must be a JSON object")
                records.append(ReplayRecord(parse_time(row["received_at"], f"{where}: field 'received_at'"),
                                            row["request"]))  # fmt: skip
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a UTF-8 text file") from None
    if not records:
        raise ReplayError(f"{path}: no requests in the file")
    return records


def write_jsonl(path: Path, records: Sequence[ReplayRecord]) -> None:
    """Records in the ``routing export-requests`` format (so they can be replayed with ``--format jsonl``)."""
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"received_at": r.at.isoformat(), "request": r.body}, separators=(",", ":")) + "\n")


# -- the replay --------------------------------------------------------------------------------------


def _transport_error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "connect_timeout" if isinstance(exc, httpx.ConnectTimeout) else "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection_lost"
    return type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost exception of a chain, short: what went wrong under httpx's wrapper. An OS error is
    named by its class only (ConnectionResetError, ...): its message carries addresses that would split
    one cause into many report keys."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    text = "" if isinstance(exc, OSError) else str(exc)
    return f"{type(exc).__name__}: {text}"[:100] if text else type(exc).__name__


def schedule(records: Sequence[ReplayRecord], config: ReplayConfig) -> list[tuple[float, ReplayRecord]]:
    """(seconds after the start, record) for every record inside the window, in time order."""
    ordered = sorted(records, key=lambda r: r.at)  # stable: records with equal times keep the file order
    if not ordered:
        return []
    t_first = ordered[0].at
    out = []
    for r in ordered:
        rec_s = (r.at - t_first).total_seconds() - config.start_offset_s
        if rec_s < 0:
            continue
        offset = rec_s / config.speed
        if config.duration_s is not None and offset >= config.duration_s:
            break
        out.append((offset, r))
    return out


async def replay(records: Sequence[ReplayRecord], config: ReplayConfig,
                 progress: Callable[[Sample], None] | None = None) -> ReplayResult:  # fmt: skip
    """Send ``records`` open loop; SIGINT (Ctrl-C) stops it early with a partial result."""
    plan = schedule(records, config)
    bodies = [json.dumps(r.body, separators=(",", ":")).encode() for _, r in plan]
    headers = config.headers()
    samples = [Sample(i, offset) for i, (offset, _) in enumerate(plan)]
    hist = LatencyHistogram()
    limit = asyncio.Semaphore(config.concurrency_limit) if config.concurrency_limit else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread: no handler
        loop.add_signal_handler(signal.SIGINT, stop.set)
    limits = httpx.Limits(max_connections=config.concurrency_limit, max_keepalive_connections=256,
                          keepalive_expiry=KEEPALIVE_EXPIRY_S)  # fmt: skip
    late_s = config.late_ms / 1000.0
    started_at = datetime.now(UTC)

    async with httpx.AsyncClient(base_url=config.url, timeout=config.timeout_s, limits=limits) as client:
        t0 = time.perf_counter() + 0.05  # a moment to spare for the first task
        in_flight = 0
        idle = asyncio.Event()

        async def send(sample: Sample, body: bytes) -> None:
            nonlocal in_flight

            async def on_wire(event: str, info: dict[str, Any]) -> None:
                if sample.sent_s is None and event.endswith("send_request_headers.started"):
                    sample.sent_s = time.perf_counter() - t0

            try:
                if limit is not None:
                    await limit.acquire()
                try:
                    r = await client.post(ROUTES_PATH, content=body, headers=headers, extensions={"trace": on_wire})
                finally:
                    if limit is not None:
                        limit.release()
            except httpx.HTTPError as exc:
                sample.done_s = time.perf_counter() - t0
                if sample.sent_s is None:
                    sample.sent_s = sample.done_s
                sample.outcome = _transport_error_kind(exc)
                # a timeout's chain ends in the cancelled scope: its own class (ReadTimeout, ...) says more
                sample.detail = type(exc).__name__ if isinstance(exc, httpx.TimeoutException) else _root_cause(exc)
            except Exception as exc:  # anything else the client raises is counted, never fatal to the replay
                sample.done_s = time.perf_counter() - t0
                if sample.sent_s is None:
                    sample.sent_s = sample.done_s
                sample.outcome = f"client_{type(exc).__name__}"
            else:
                sample.done_s = time.perf_counter() - t0
                if sample.sent_s is None:  # no trace event came (should not happen over HTTP/1.1)
                    sample.sent_s = sample.done_s
                try:
                    data = orjson.loads(r.content)
                except orjson.JSONDecodeError:
                    data = None
                if r.status_code == 200:
                    sample.outcome = "ok"
                    if isinstance(data, dict):
                        sample.cache = data.get("cache")
                    hist.record(sample.latency_ms or 0.0)
                else:
                    sample.outcome = f"http_{r.status_code}"
                    with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
                        sample.detail = str(data["detail"][0]["kind"])  # type: ignore[index]
            finally:
                in_flight -= 1
                if in_flight == 0:
                    idle.set()
                if sample.sent_s is not None and sample.sent_s - sample.sched_s > late_s:
                    sample.late = True
                if progress is not None:
                    progress(sample)

        tasks: list[asyncio.Task[None]] = []
        for sample, body in zip(samples, bodies, strict=True):
            delay = t0 + sample.sched_s - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(0)  # behind schedule: still let answers in between sends
            if stop.is_set():
                break
            in_flight += 1
            idle.clear()
            tasks.append(asyncio.create_task(send(sample, body)))
        if in_flight and not stop.is_set():
            waits = [asyncio.create_task(idle.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - t0
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGINT)
    return ReplayResult(config, samples[: len(tasks)], wall, stop.is_set(), len(plan), started_at, hist)


def run(records: Sequence[ReplayRecord], config: ReplayConfig,
        progress: Callable[[Sample], None] | None = None) -> ReplayResult:  # fmt: skip
    """``replay`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(replay(records, config, progress))
