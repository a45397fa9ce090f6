#!/usr/bin/env python
"""Serving benchmark: POST /v1/routes under load, monolith and services mode, from a second process.

Everything runs as subprocesses of this script on fresh state (a temp dir; in services mode a
new PostgreSQL database, a Redis key prefix and a RabbitMQ queue of their own, removed at the
end), and this process is the load generator: asyncio + ``httpx.AsyncClient`` over loopback.

Two kinds of load, and which one each table uses is named in it:

* **open loop** (``rate`` column): request i is due at ``t0 + i / rate``, whatever happened to
  the requests before it. Latency is counted from the request's *scheduled* time, not from
  when it actually went out, so a stall of the generator or the server cannot hide queueing
  (no coordinated omission). A request that starts more than ``LATE_MS`` after its scheduled
  time is counted as a late send.
* **closed loop** (``users`` column): N virtual users, each sending its next request as soon as
  its previous answer arrives, for ``--duration`` seconds: N requests in flight at all times.
  "Concurrency N" in the tables means this. Latency is from send to answer; throughput is what
  the server sustains with N in flight.

Scenarios (``--scenarios``, comma-separated; default all):

* ``c20``         monolith, 20-stop cache misses, 1 user (the issue's goal: p50 <= 60 ms), and the same
                  with ``time_budget_ms`` 10 for information (not the default; shows the non-search time);
* ``concurrency`` monolith, 10- and 50-stop cache misses at 1, 10, 50, 300 users (``--levels``);
* ``cache``       monolith, open loop: distinct requests (misses) vs one request repeated (hits), 10 and 50 stops,
                  and GET /healthz at the same rate (the HTTP floor);
* ``batching``    monolith with ``ROUTING_MAX_BATCH=32`` vs ``=1``, 10- and 50-stop misses: 50 users (saturation),
                  then an open-loop rate sweep (x1.25 per step, the same bodies in both modes) up to the first
                  rate whose p99 passes ``SWEEP_P99_MS``: "throughput at equal p99" is the highest passing rate;
* ``services``    ``routing serve --mode api`` + 1, then 2 ``routing worker`` on PostgreSQL, Redis, RabbitMQ:
                  the same open-loop rates and the same request bodies as the monolith, then 50 and 300 users.

Every miss run flushes the route cache first (``POST /v1/admin/cache/flush``) and counts the hits it
got anyway (should be 0). Server settings are the service defaults unless a table says otherwise
(``max_wait_ms`` 5, ``max_queue`` 1000, ``request_timeout_s`` 10), ``time_budget_ms`` 50.

    .venv/bin/python bench/serving.py                       # full run (~10 min on 2 cores)
    .venv/bin/python bench/serving.py --quick               # smoke run, does not touch serving-latest.json
    .venv/bin/python bench/serving.py --scenarios c20,cache --duration 10

Writes ``bench/results/serving-<UTC timestamp>.json``, and ``bench/results/serving-latest.json`` after a
run of every scenario (``serving-quick-<timestamp>.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import BenchError, free_port, git_info, machine_info, routing_bin, sigterm_as_exit, versions

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SCHEMA = 1

SCENARIOS = ("c20", "concurrency", "cache", "batching", "services")
BBOX = (60.1650, 60.1780, 24.9370, 24.9520)  # lat0, lat1, lon0, lon1: central Helsinki, inside the bundled extract
DEPART_AT = "2026-12-01T08:00:00+02:00"  # fixed, so that a repeated request keeps its cache key (15-min bucket)
BUDGET_MS = 50.0  # the service's default time_budget_ms
LATE_MS = 10.0  # an open-loop request that starts later than this after its scheduled time is a late send
CLIENT_TIMEOUT_S = 60.0  # the server answers 504 after request_timeout_s (10 s) of queueing; this is far past it
OPEN_LOOP_CONNECTIONS = 1024
RATE_FRACTIONS = (0.25, 0.5, 0.9)
CACHE_STOPS = (10, 50)  # the cache scenario's request sizes
SWEEP_P99_MS = 1000.0  # "throughput at equal p99": the highest open-loop rate whose p99 stays under this
SWEEP_START_RPS = {10: 20.0, 50: 8.0}  # stops -> first rate of the batching sweep (then x1.25 per step)
SWEEP_MAX_RPS = 400.0
LEVELS = (
    1,
    10,
    50,
    300,
)  # closed-loop users of the concurrency scenario  # open-loop rates as fractions of the batched monolith's saturation throughput

POSTGRES_URL = os.environ.get("ROUTING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROUTING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("ROUTING_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback|^\w+(Error|Exception)\b")
INFRA_PROCESSES = ("postgres", "redis-server", "beam.smp", "epmd", "erl_child_setup")


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# -- request bodies -------------------------------------------------------------------------


def route_body(rng: np.random.Generator, n_stops: int, tag: str, budget_ms: float) -> bytes:
    """A POST /v1/routes body: start + ``n_stops`` random stops in BBOX, ending back at the start."""
    lat0, lat1, lon0, lon1 = BBOX
    lat = np.round(rng.uniform(lat0, lat1, n_stops + 1), 6).tolist()
    lon = np.round(rng.uniform(lon0, lon1, n_stops + 1), 6).tolist()
    body = {
        "driver_id": tag, "start": {"lat": lat[0], "lon": lon[0]}, "depart_at": DEPART_AT,
        "stops": [{"id": f"s{k}", "lat": lat[k], "lon": lon[k]} for k in range(1, n_stops + 1)],
        "options": {"time_budget_ms": budget_ms},
    }  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


class Bodies:
    """A deterministic stream of distinct bodies: the same (seed, key) gives the same requests in every mode."""

    def __init__(self, seed: int, key: str, n_stops: int, budget_ms: float = BUDGET_MS) -> None:
        self.rng = np.random.default_rng([seed, *key.encode()])
        self.n_stops, self.budget_ms, self.key, self.i = n_stops, budget_ms, key, 0

    def next(self) -> bytes:
        self.i += 1
        return route_body(self.rng, self.n_stops, f"{self.key}-{self.i}", self.budget_ms)

    def take(self, n: int) -> list[bytes]:
        return [self.next() for _ in range(n)]


# -- the load generator ----------------------------------------------------------------------


@dataclass
class Sample:
    sched: float  # open loop: scheduled send time; closed loop: send time (perf_counter seconds)
    sent: float
    done: float
    status: str  # "200", "504", ... or the exception's name for a transport error
    cache: str | None = None
    batch: int | None = None
    worker: str | None = None
    server_ms: dict[str, float] = field(default_factory=dict)
    error_kind: str | None = None
    route_s: float | None = None  # total_duration_s of the answer: the route's quality
    body_index: int | None = None  # closed loop: which body of the stream (the same index is the same body)


JSON_HEADERS = {"content-type": "application/json"}  # + the dispatcher token, once a database has one


def authorize(env: dict[str, str]) -> None:
    """An unlimited dispatcher token of ``env``'s database on every request the bench sends."""
    out = run_cli(["tokens", "create", "--role", "dispatcher", "--rate-limit", "0", "--name", "bench"], env)
    JSON_HEADERS["Authorization"] = "Bearer " + out.splitlines()[-1]


async def send(client: httpx.AsyncClient, body: bytes | None, sched: float | None = None) -> Sample:
    """POST ``body`` to /v1/routes; ``None``: GET /healthz instead (the HTTP floor of this stack and client)."""
    sent = time.perf_counter()
    try:
        if body is None:
            r = await client.get("/healthz")
        else:
            r = await client.post("/v1/routes", content=body, headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        done = time.perf_counter()
        return Sample(sched if sched is not None else sent, sent, done, type(exc).__name__)
    done = time.perf_counter()
    s = Sample(sched if sched is not None else sent, sent, done, str(r.status_code))
    try:
        d = r.json()
    except ValueError:
        return s
    if r.status_code == 200:
        s.cache, s.server_ms, s.route_s = d.get("cache"), d.get("timings_ms") or {}, d.get("total_duration_s")
        served = d.get("served_by") or {}
        s.batch, s.worker = served.get("batch_size"), served.get("worker")
    else:
        with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
            s.error_kind = d["detail"][0]["kind"]
    return s


def client_for(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S, limits=limits)


async def _open_loop(base_url: str, bodies: Sequence[bytes | None], rate: float) -> tuple[float, list[Sample], int]:
    """Request i at t0 + i/rate; returns (t0, samples, requests still unanswered at the end)."""
    async with client_for(base_url, OPEN_LOOP_CONNECTIONS) as client:
        tasks: list[asyncio.Task[Sample]] = []
        t0 = time.perf_counter() + 0.02
        for i, body in enumerate(bodies):
            sched = t0 + i / rate
            delay = sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, body, sched)))
        done, pending = await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT_S + 5)
        for t in pending:
            t.cancel()
        return t0, [t.result() for t in tasks if t in done], len(pending)


async def _closed_loop(base_url: str, stream: Bodies, users: int, duration_s: float) -> tuple[float, list[Sample], int]:
    samples: list[Sample] = []
    async with client_for(base_url, users) as client:
        t0 = time.perf_counter()
        end = t0 + duration_s

        async def user() -> None:
            while time.perf_counter() < end:
                index = stream.i
                sample = await send(client, stream.next())
                sample.body_index = index
                samples.append(sample)

        tasks = [asyncio.create_task(user()) for _ in range(users)]
        _, pending = await asyncio.wait(tasks, timeout=duration_s + CLIENT_TIMEOUT_S + 5)
        for t in pending:
            t.cancel()
        return t0, samples, len(pending)


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- CPU accounting -------------------------------------------------------------------------------


def _jiffies(pid: int | str) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def infra_pids() -> list[int]:
    """PostgreSQL, Redis, RabbitMQ processes on this machine (their CPU is counted apart)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.joinpath("comm").read_text().strip() in INFRA_PROCESSES:
                    out.append(int(p.name))
    return out


class Cpu:
    """CPU seconds of this process, the service processes, the infra servers and the whole machine."""

    def __init__(self, service_pids: list[int]) -> None:
        self.service_pids, self.infra = service_pids, infra_pids()
        self.t, self.v = time.perf_counter(), self._read()

    def _read(self) -> tuple[int, int, int, int]:
        busy = 0
        with contextlib.suppress(OSError, IndexError, ValueError):
            v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            busy = sum(v) - v[3] - v[4]
        return (busy, _jiffies("self"), sum(_jiffies(p) for p in self.service_pids),
                sum(_jiffies(p) for p in self.infra))  # fmt: skip

    def stop(self) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self.t
        busy, gen, svc, infra = ((b - a) / hz for a, b in zip(self.v, self._read(), strict=True))
        cpus = len(os.sched_getaffinity(0))
        return {"wall_s": round(wall, 2), "machine_busy_share": round(busy / (wall * cpus), 3),
                "generator_cpu_s": round(gen, 2), "service_cpu_s": round(svc, 2), "infra_cpu_s": round(infra, 2),
                "others_share": round(max(0.0, busy - gen - svc - infra) / (wall * cpus), 3)}  # fmt: skip


# -- one measured run -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def summarize(samples: list[Sample], t0: float, unanswered: int, *, late_ms: float | None) -> dict[str, Any]:
    ok = [s for s in samples if s.status == "200"]
    lat = [(s.done - s.sched) * 1e3 for s in ok]
    errors = Counter(s.status + (f" {s.error_kind}" if s.error_kind else "") for s in samples if s.status != "200")
    if unanswered:
        errors["unanswered"] += unanswered
    end = max((s.done for s in samples), default=t0)
    lag = [(s.sent - s.sched) * 1e3 for s in samples]
    server_total = [s.server_ms["total"] for s in ok if "total" in s.server_ms]
    outside = [(s.done - s.sent) * 1e3 - s.server_ms["total"] for s in ok if "total" in s.server_ms]
    batches = [s.batch for s in ok if s.batch is not None and s.cache == "miss"]
    routes = [s.route_s for s in ok if s.route_s is not None]
    out: dict[str, Any] = {
        "sent": len(samples) + unanswered, "ok": len(ok), "errors": dict(errors), "error_count": sum(errors.values()),
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "max_ms": round(max(lat), 2) if lat else None, "mean_ms": round(float(np.mean(lat)), 2) if lat else None,
        "throughput_rps": round(len(ok) / (end - t0), 2) if end > t0 else 0.0, "window_s": round(end - t0, 2),
        "cache_hits": sum(1 for s in ok if s.cache == "hit"),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else None,
        "max_batch": max(batches) if batches else None,
        # mean route duration of the answers: the same bodies in two runs give comparable numbers (the search
        # budget is wall time, so a search that shares its core with others does less work in it)
        "mean_route_s": round(float(np.mean(routes)), 1) if routes else None,
        # closed loop: route duration per body index, to compare two runs of one stream on the bodies both answered
        "route_s_by_body": {s.body_index: s.route_s for s in ok if s.body_index is not None and s.route_s is not None},
        "workers": dict(Counter(s.worker for s in ok if s.worker)),
        "server_total_p50_ms": pct(server_total, 50), "server_total_p99_ms": pct(server_total, 99),
        # time outside the handler's own timings: HTTP, validation, the request-log write, serialisation
        "outside_server_p50_ms": pct(outside, 50),
        "server_layers_p50_ms": {k: pct([s.server_ms[k] for s in ok if k in s.server_ms], 50)
                                 for k in ("ingest", "queue_wait", "inference", "search", "post")},
        "samples_ms": [round(v, 2) for v in lat],
        "error_samples": [{"status": s.status, "kind": s.error_kind, "at_s": round(s.sched - t0, 3),
                           "latency_ms": round((s.done - s.sched) * 1e3, 1)}
                          for s in samples if s.status != "200"][:20],
    }  # fmt: skip
    if late_ms is not None:
        out["late_sends"] = sum(1 for v in lag if v > late_ms)
        out["send_lag_p99_ms"] = pct(lag, 99)
        out["send_lag_max_ms"] = round(max(lag), 2) if lag else None
    return out


class Target:
    """A running deployment to measure: base URL and the pids of its processes."""

    def __init__(self, name: str, base_url: str, pids: Callable[[], list[int]]) -> None:
        self.name, self.base_url, self.pids = name, base_url, pids

    def flush_cache(self) -> None:
        r = httpx.post(f"{self.base_url}/v1/admin/cache/flush", headers=JSON_HEADERS, timeout=30)
        if r.status_code != 200:
            raise BenchError(f"{self.name}: cache flush answered {r.status_code}: {r.text[:200]}")

    def metrics(self) -> dict[str, float]:
        """Counters of /metrics worth keeping: requests by status, errors by kind, persist failures."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            m = re.match(r"(routing_(?:requests|errors|persist_failures|cache)_total)(\{[^}]*\})? ([0-9.e+]+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def measure(target: Target, label: str, *, rate: float | None = None, bodies: Sequence[bytes | None] | None = None,
            users: int | None = None, stream: Bodies | None = None, duration_s: float = 0.0,
            flush: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One run: open loop (``rate`` + ``bodies``) or closed loop (``users`` + ``stream`` for ``duration_s``)."""
    if flush:
        target.flush_cache()
    m0 = target.metrics()
    cpu = Cpu(target.pids())
    if rate is not None:
        assert bodies is not None
        t0, samples, unanswered = run_async(_open_loop(target.base_url, bodies, rate))
        res = summarize(samples, t0, unanswered, late_ms=LATE_MS)
        cfg: dict[str, Any] = {"load": "open", "rate_rps": round(rate, 2), "requests": len(bodies),
                               "duration_s": round(len(bodies) / rate, 2)}  # fmt: skip
    else:
        assert users is not None and stream is not None
        t0, samples, unanswered = run_async(_closed_loop(target.base_url, stream, users, duration_s))
        res = summarize(samples, t0, unanswered, late_ms=None)
        cfg = {"load": "closed", "users": users, "duration_s": duration_s}
    cpu_use = cpu.stop()
    run = {"label": label, "target": target.name, **cfg, **(extra or {}), **res, "cpu": cpu_use,
           "server_counters": metrics_delta(m0, target.metrics())}  # fmt: skip
    load = f"rate {rate:.1f}/s" if rate is not None else f"{users} users"
    errs = ", ".join(f"{k}: {v}" for k, v in res["errors"].items()) or "none"
    log(f"  {target.name} | {label} | {load}: {res['ok']} ok, p50 {res['p50_ms']} p99 {res['p99_ms']} ms, "
        f"{res['throughput_rps']} req/s, errors {errs}"
        + (f", late sends {res['late_sends']}" if "late_sends" in res else "")
        + f"; CPU gen {cpu_use['generator_cpu_s']} s, service {cpu_use['service_cpu_s']} s")  # fmt: skip
    return run


def warm_up(target: Target, seed: int, duration_s: float) -> None:
    """Unmeasured requests: connections, first batches, JIT and allocator warm-up; both sizes."""
    for n in (10, 50):
        run_async(_closed_loop(target.base_url, Bodies(seed, f"warm{n}", n), 4, duration_s))


# -- processes -------------------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([routing_bin(), *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"`routing {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


class Proc:
    """A ``routing ...`` subprocess with its log; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.log_path = name, logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([routing_bin(), *args], env=env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def warnings(self) -> list[str]:
        """Warning and error lines of the log, with exception lines (first 20 distinct, with counts)."""
        seen: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if LOG_PROBLEM.search(line):
                    key = re.sub(r"^\d{4}-\d\d-\d\d \S+ ", "", line)[:300]
                    seen[key] = seen.get(key, 0) + 1
        return [f"{n}x {k}" for k, n in list(seen.items())[:20]]

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def wait_ready(base_url: str, procs: list[Proc], timeout_s: float = 180.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        dead = [p for p in procs if not p.alive()]
        if dead:
            raise BenchError(f"{dead[0].name} exited {dead[0].proc.returncode}:\n{dead[0].tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return time.perf_counter() - t0
        time.sleep(0.1)
    raise BenchError(f"{base_url} not ready after {timeout_s:.0f} s:\n{procs[0].tail()}")


@contextlib.contextmanager
def monolith(env: dict[str, str], tmp: Path, name: str, max_batch: int) -> Iterator[tuple[Target, dict[str, Any]]]:
    port = free_port()
    env = {**env, "ROUTING_MAX_BATCH": str(max_batch)}
    server = Proc(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp)
    info: dict[str, Any] = {"max_batch": max_batch}
    try:
        info["ready_s"] = round(wait_ready(f"http://127.0.0.1:{port}", [server]), 2)
        log(f"{name}: `routing serve` (ROUTING_MAX_BATCH={max_batch}) ready in {info['ready_s']} s")
        yield Target(name, f"http://127.0.0.1:{port}", lambda: [server.pid]), info
    finally:
        server.stop()
        info["log_warnings"] = server.warnings()


# -- services mode infrastructure --------------------------------------------------------------------


class Infra:
    """A PostgreSQL database, a Redis key prefix, a RabbitMQ queue: made for this run, removed after."""

    def __init__(self) -> None:
        run_id = uuid.uuid4().hex[:10]
        self.db_name = f"routing_bench_{run_id}"
        self.db_url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.queue = f"routing-bench-{run_id}"
        self.prefix = f"routing-bench-{run_id}:"
        self.created = False

    def check(self) -> None:
        import pika
        import psycopg
        import redis

        for what, fn in (("PostgreSQL", lambda: psycopg.connect(POSTGRES_URL, connect_timeout=3).close()),
                         ("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()),
                         ("RabbitMQ", lambda: pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close())):  # fmt: skip
            try:
                fn()
            except Exception as exc:
                raise BenchError(f"{what} not reachable: {exc}") from None

    def create(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.created = True

    def consumers(self) -> int:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            return int(conn.channel().queue_declare(self.queue, passive=True).method.consumer_count)
        except Exception:
            return 0
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def remove(self) -> list[str]:
        problems = []
        try:
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            ch = conn.channel()
            for q in (self.queue, f"{self.queue}.dlq"):
                ch.queue_delete(q)
            ch.exchange_delete(f"{self.queue}.dlx")
            conn.close()
        except Exception as exc:
            problems.append(f"RabbitMQ cleanup: {exc!r}")
        try:
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(match=f"{self.prefix}*"):
                r.unlink(key)
        except Exception as exc:
            problems.append(f"Redis cleanup: {exc!r}")
        if self.created:
            try:
                import psycopg

                with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as exc:
                problems.append(f"PostgreSQL cleanup: {exc!r}")
        return problems


# -- scenarios -------------------------------------------------------------------------------------


@dataclass
class Plan:
    duration_s: float
    levels: tuple[int, ...]
    seed: int
    rates: tuple[float, ...] | None
    cache_rate: float
    quick: bool
    sweep_s: float = 8.0  # seconds of requests per sweep step


def scenario_c20(t: Target, plan: Plan) -> list[dict[str, Any]]:
    runs = [measure(t, "20 stops, miss", users=1, stream=Bodies(plan.seed, "c20", 20), duration_s=plan.duration_s,
                    extra={"stops": 20, "time_budget_ms": BUDGET_MS})]  # fmt: skip
    runs.append(measure(t, "20 stops, miss, budget 10 ms (info)", users=1,
                        stream=Bodies(plan.seed, "c20b10", 20, budget_ms=10.0), duration_s=plan.duration_s / 2,
                        extra={"stops": 20, "time_budget_ms": 10.0}))  # fmt: skip
    return runs


def scenario_concurrency(t: Target, plan: Plan) -> list[dict[str, Any]]:
    runs = []
    for stops in (10, 50):
        for users in plan.levels:
            if plan.quick and stops == 50 and users >= 300:
                continue  # the smoke run keeps one 300-user level (10 stops): each takes ~10 s whatever --duration
            runs.append(measure(t, f"{stops} stops, miss", users=users, duration_s=plan.duration_s,
                                stream=Bodies(plan.seed, f"conc{stops}", stops),
                                extra={"stops": stops}))  # fmt: skip
    return runs


def scenario_cache(t: Target, plan: Plan) -> list[dict[str, Any]]:
    """Distinct requests (misses) vs one request repeated (hits), open loop, at 10 and 50 stops."""
    n = max(10, round(plan.cache_rate * plan.duration_s * 2))
    # The floor: GET /healthz (no body, no work) at the same rate, through the same client and server.
    runs = [measure(t, "HTTP floor: GET /healthz", rate=plan.cache_rate, bodies=[None] * n, flush=False,
                    extra={"stops": 0, "cache": "floor"})]  # fmt: skip
    for stops in CACHE_STOPS:
        misses = Bodies(plan.seed, f"cache-miss{stops}", stops).take(n)
        runs.append(measure(t, f"{stops} stops, miss (distinct requests)", rate=plan.cache_rate, bodies=misses,
                            extra={"stops": stops, "cache": "miss"}))  # fmt: skip
        one = Bodies(plan.seed, f"cache-hit{stops}", stops).next()
        t.flush_cache()
        first = httpx.post(f"{t.base_url}/v1/routes", content=one, headers=JSON_HEADERS, timeout=30)
        if first.status_code != 200:
            raise BenchError(f"cache warm-up request: {first.status_code} {first.text[:200]}")
        runs.append(measure(t, f"{stops} stops, hit (one request repeated)", rate=plan.cache_rate, bodies=[one] * n,
                            flush=False, extra={"stops": stops, "cache": "hit"}))  # fmt: skip
    return runs


def saturation(t: Target, plan: Plan, users: int = 50) -> dict[str, Any]:
    return measure(t, "10 stops, miss (saturation)", users=users, duration_s=plan.duration_s,
                   stream=Bodies(plan.seed, "conc10", 10), extra={"stops": 10})  # fmt: skip


def rate_runs(t: Target, plan: Plan, rates: tuple[float, ...]) -> list[dict[str, Any]]:
    runs = []
    for rate in rates:
        bodies = Bodies(plan.seed, f"rate-{rate:.2f}", 10).take(max(5, round(rate * plan.duration_s)))
        runs.append(measure(t, "10 stops, miss", rate=rate, bodies=bodies, extra={"stops": 10}))
    return runs


def sweep(t: Target, plan: Plan, stops: int, start_rps: float) -> dict[str, Any]:
    """Open-loop rates from ``start_rps`` up by x1.25 until one fails (an error, p99 over
    ``SWEEP_P99_MS``, or under 90% of the offered rate answered in time): the highest passing rate is
    the throughput at that p99. The same (seed, stops, rate) gives the same bodies in every run."""
    steps: list[dict[str, Any]] = []
    rate, best = start_rps, None
    while rate <= SWEEP_MAX_RPS:
        bodies = Bodies(plan.seed, f"sweep{stops}-{rate:.2f}", stops).take(max(5, round(rate * plan.sweep_s)))
        r = measure(t, f"{stops} stops, miss (sweep)", rate=rate, bodies=bodies, extra={"stops": stops, "sweep": True})
        r["passed"] = bool(r["error_count"] == 0 and (r["p99_ms"] or math.inf) <= SWEEP_P99_MS
                           and r["throughput_rps"] >= 0.9 * rate)  # fmt: skip
        steps.append(r)
        if not r["passed"]:
            break
        best = rate
        rate = round(rate * 1.25, 2)
    return {"stops": stops, "p99_target_ms": SWEEP_P99_MS, "max_rate_rps": best, "steps": steps}


def batching_runs(t: Target, plan: Plan, sat10: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Saturation (50 users) at 10 and 50 stops, then a rate sweep at each size."""
    runs = [sat10 or saturation(t, plan)]
    runs.append(measure(t, "50 stops, miss (saturation)", users=50, duration_s=plan.duration_s,
                        stream=Bodies(plan.seed, "conc50", 50), extra={"stops": 50}))  # fmt: skip
    sweeps = [sweep(t, plan, stops, start) for stops, start in SWEEP_START_RPS.items()]
    return runs, sweeps


def choose_rates(plan: Plan, saturation_rps: float | None) -> tuple[float, ...]:
    if plan.rates:
        return plan.rates
    if not saturation_rps:
        raise BenchError("no saturation throughput to derive the open-loop rates from; pass --rates")
    return tuple(round(f * saturation_rps, 1) for f in RATE_FRACTIONS)


# -- main ---------------------------------------------------------------------------------------------


def other_benchmarks() -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmd = p.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                if re.search(r"bench/(quality|graph)\.py|pytest", cmd):
                    out.append(f"{p.name}: {cmd[:120]}")
    return out


def service_env(tmp: Path) -> dict[str, str]:
    """This shell's environment for the processes a bench starts, with the service's defaults for every
    setting a bench compares (whatever the shell holds), quiet logs and a model directory under ``tmp``."""
    env = {**os.environ, "ROUTING_LOG_LEVEL": "warning", "ROUTING_ENVIRONMENT": "test",
           "ROUTING_MODEL_DIR": str(tmp / "models")}  # fmt: skip
    for k in ("ROUTING_REDIS_URL", "ROUTING_AMQP_URL", "ROUTING_MAX_BATCH", "ROUTING_MAX_WAIT_MS", "ROUTING_MAX_QUEUE",
              "ROUTING_REQUEST_TIMEOUT_S", "ROUTING_MODE", "ROUTING_AUTH", "ROUTING_TOKEN"):  # fmt: skip
        env.pop(k, None)
    return env


def compile_model(env: dict[str, str], model_dir: Path) -> None:
    """Export the committed checkpoint once, so that no server or worker compiles it (or races to)."""
    code = ("import sys; from pathlib import Path; from routing_api.model_service import ensure_compiled; "
            "from routing_api.model_training import CHECKPOINT; ensure_compiled(CHECKPOINT, Path(sys.argv[1]))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(model_dir)], env=env, cwd=REPO, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"compiling the model failed:\n{proc.stdout}{proc.stderr}")


def run_monolith(env: dict[str, str], tmp: Path, plan: Plan, wanted: set[str], result: dict[str, Any]) -> None:
    db = tmp / "routing.sqlite3"
    env = {**env, "ROUTING_DATABASE_URL": f"sqlite:///{db}"}
    run_cli(["db", "upgrade"], env)
    authorize(env)
    result["setup"]["import_map"] = run_cli(["import-map"], env)
    log(f"monolith: {result['setup']['import_map']}")
    sc = result["scenarios"]
    with monolith(env, tmp, "monolith-batch32", 32) as (t, info):
        result["servers"]["monolith-batch32"] = info
        warm_up(t, plan.seed, 0.5 if plan.quick else 3.0)
        if "c20" in wanted:
            log("scenario c20: 20-stop misses, 1 user")
            sc["c20"] = {"runs": scenario_c20(t, plan)}
        sat: dict[str, Any] | None = None
        if "concurrency" in wanted:
            log(f"scenario concurrency: 10- and 50-stop misses at {plan.levels} users")
            sc["concurrency"] = {"runs": scenario_concurrency(t, plan)}
            sat = next((r for r in sc["concurrency"]["runs"] if r["stops"] == 10 and r["users"] == 50), None)
        if "cache" in wanted:
            log(f"scenario cache: misses vs hits, open loop at {plan.cache_rate}/s")
            sc["cache"] = {"runs": scenario_cache(t, plan)}
        if "batching" in wanted or "services" in wanted:
            if sat is None:
                log("saturation: 50 users, 10-stop misses")
                sat = saturation(t, plan)
            result["saturation_rps"] = sat["throughput_rps"]
            rates = choose_rates(plan, sat["throughput_rps"])
            result["rates"] = list(rates)
            if "batching" in wanted:
                log("scenario batching (on, max_batch 32): saturation at 10 and 50 stops, rate sweeps")
                runs, sweeps = batching_runs(t, plan, sat)
                sc["batching"] = {"runs": [{**r, "batching": "on"} for r in runs],
                                  "sweeps": [{**w, "batching": "on"} for w in sweeps]}  # fmt: skip
        result["servers"]["monolith-batch32"]["counters"] = t.metrics()
    if "batching" in wanted:
        with monolith(env, tmp, "monolith-batch1", 1) as (t, info):
            result["servers"]["monolith-batch1"] = info
            warm_up(t, plan.seed, 0.5 if plan.quick else 3.0)
            log("scenario batching (off, max_batch 1): saturation at 10 and 50 stops, rate sweeps")
            runs, sweeps = batching_runs(t, plan, None)
            sc["batching"]["runs"] += [{**r, "batching": "off"} for r in runs]
            sc["batching"]["sweeps"] += [{**w, "batching": "off"} for w in sweeps]
            result["servers"]["monolith-batch1"]["counters"] = t.metrics()


def run_services(env: dict[str, str], tmp: Path, plan: Plan, result: dict[str, Any]) -> None:
    infra = Infra()
    infra.check()
    procs: dict[str, Proc] = {}
    runs: list[dict[str, Any]] = []
    result["scenarios"]["services"] = {"runs": runs}
    try:
        infra.create()
        env = {**env, "ROUTING_DATABASE_URL": infra.db_url, "ROUTING_REDIS_URL": REDIS_URL,
               "ROUTING_AMQP_URL": AMQP_URL, "ROUTING_QUEUE_NAME": infra.queue, "ROUTING_CACHE_PREFIX": infra.prefix,
               "ROUTING_MAX_BATCH": "32"}  # fmt: skip
        run_cli(["db", "upgrade"], env)
        authorize(env)
        run_cli(["import-map"], env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        procs["w1"] = Proc("services-w1", ["worker", "--worker-id", "w1"], env, tmp)
        procs["api"] = Proc("services-api", ["serve", "--mode", "api", "--host", "127.0.0.1", "--port", str(port)],
                            env, tmp)  # fmt: skip
        ready = wait_ready(base, list(procs.values()))
        t_wait = time.perf_counter()
        while infra.consumers() < 1:
            if time.perf_counter() - t_wait > 120 or not procs["w1"].alive():
                raise BenchError(f"worker w1 never consumed:\n{procs['w1'].tail()}")
            time.sleep(0.2)
        log(
            f"services: API ready in {ready:.1f} s, worker w1 consuming after {time.perf_counter() - t_wait:.1f} s more"
        )
        rates = tuple(result.get("rates") or ())
        for workers in (1, 2):
            if workers == 2:
                procs["w2"] = Proc("services-w2", ["worker", "--worker-id", "w2"], env, tmp)
                t_wait = time.perf_counter()
                while infra.consumers() < 2:
                    if time.perf_counter() - t_wait > 120 or not procs["w2"].alive():
                        raise BenchError(f"worker w2 never consumed:\n{procs['w2'].tail()}")
                    time.sleep(0.2)
                log(f"services: worker w2 consuming after {time.perf_counter() - t_wait:.1f} s")
            svc = Target(f"services-{workers}w", base, lambda: [p.pid for p in procs.values() if p.alive()])
            warm_up(svc, plan.seed, 0.5 if plan.quick else 3.0)
            sat = saturation(svc, plan)
            if not rates:
                rates = choose_rates(plan, sat["throughput_rps"])
                result["rates"] = list(rates)
            log(f"scenario services ({workers} worker{'s' if workers > 1 else ''}): open loop at {rates}/s, 300 users")
            here = [sat, *rate_runs(svc, plan, rates)]
            if 300 in plan.levels and (workers == 2 or not plan.quick):
                here.append(measure(svc, "10 stops, miss", users=300, duration_s=plan.duration_s,
                                    stream=Bodies(plan.seed, "conc10", 10), extra={"stops": 10}))  # fmt: skip
            if 300 in plan.levels and workers == 2 and not plan.quick:
                here.append(measure(svc, "50 stops, miss", users=300, duration_s=plan.duration_s,
                                    stream=Bodies(plan.seed, "conc50", 50), extra={"stops": 50}))  # fmt: skip
            runs += [{**r, "workers": workers} for r in here]
        result["servers"]["services"] = {"counters": svc.metrics(), "queue": infra.queue, "database": infra.db_name}
    finally:
        for p in procs.values():
            p.stop()
        if procs:
            result["servers"].setdefault("services", {})["log_warnings"] = {
                p.name: p.warnings() for p in procs.values()
            }
        problems = infra.remove()
        if problems:
            result.setdefault("cleanup_problems", []).extend(problems)
            log(f"cleanup problems: {problems}")


# -- report ---------------------------------------------------------------------------------------------


def _v(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def runs_table(runs: list[dict[str, Any]], key_cols: list[tuple[str, str]]) -> str:
    cols = [*key_cols, ("load", "load"), ("sent", "sent"), ("ok", "ok"), ("p50", "p50 ms"), ("p90", "p90 ms"),
            ("p99", "p99 ms"), ("max", "max ms"), ("thr", "req/s"), ("err", "errors"), ("late", "late sends"),
            ("hits", "cache hits"), ("batch", "mean batch"), ("route", "mean route s")]  # fmt: skip
    lines = [
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "---|" * len(key_cols) + "---:|" * (len(cols) - len(key_cols)),
    ]
    for r in runs:
        load = f"open {r['rate_rps']:g}/s" if r["load"] == "open" else f"{r['users']} users"
        cells = {"load": load, "sent": str(r["sent"]), "ok": str(r["ok"]), "p50": _v(r["p50_ms"]),
                 "p90": _v(r["p90_ms"]), "p99": _v(r["p99_ms"]), "max": _v(r["max_ms"]),
                 "thr": _v(r["throughput_rps"]),
                 "err": ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0",
                 "late": str(r["late_sends"]) if "late_sends" in r else "n/a", "hits": str(r["cache_hits"]),
                 "batch": _v(r["mean_batch"]), "route": _v(r.get("mean_route_s"))}  # fmt: skip
        for k, _ in key_cols:
            cells[k] = str(r.get(k, r.get("label")))
        lines.append("| " + " | ".join(cells[k] for k, _ in cols) + " |")
    return "\n".join(lines)


def layers_table(runs: list[dict[str, Any]], key_cols: list[tuple[str, str]]) -> str:
    cols = [*key_cols, ("load", "load"), ("server", "server total p50"), ("outside", "outside handler p50"),
            ("ingest", "ingest"), ("queue_wait", "queue wait"), ("inference", "inference"), ("search", "search"),
            ("post", "post"), ("cpu", "CPU s gen / service / infra"), ("others", "others' CPU share")]  # fmt: skip
    lines = [
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "---|" * len(key_cols) + "---:|" * (len(cols) - len(key_cols)),
    ]
    for r in runs:
        load = f"open {r['rate_rps']:g}/s" if r["load"] == "open" else f"{r['users']} users"
        lay = r["server_layers_p50_ms"]
        c = r["cpu"]
        cells = {"load": load, "server": _v(r["server_total_p50_ms"]), "outside": _v(r["outside_server_p50_ms"]),
                 **{k: _v(lay.get(k)) for k in ("ingest", "queue_wait", "inference", "search", "post")},
                 "cpu": f"{c['generator_cpu_s']:.1f} / {c['service_cpu_s']:.1f} / {c['infra_cpu_s']:.1f}",
                 "others": f"{c['others_share']:.0%}"}  # fmt: skip
        for k, _ in key_cols:
            cells[k] = str(r.get(k, r.get("label")))
        lines.append("| " + " | ".join(cells[k] for k, _ in cols) + " |")
    return "\n".join(lines)


KEYS = {
    "c20": [("label", "requests")],
    "concurrency": [("stops", "stops")],
    "cache": [("stops", "stops"), ("cache", "cache")],
    "batching": [("batching", "batching"), ("stops", "stops")],
    "services": [("workers", "workers"), ("stops", "stops")],
}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    sc = result["scenarios"]
    out: dict[str, Any] = {}
    c300 = [r for s in ("concurrency", "services") for r in sc.get(s, {}).get("runs", []) if r.get("users") == 300]
    if c300:
        errs = sum(r["error_count"] for r in c300)
        out["300_connections_zero_errors"] = {
            "met": errs == 0, "errors": errs,
            "runs": [{"target": r["target"], "stops": r["stops"], "sent": r["sent"], "errors": r["errors"]}
                     for r in c300],
        }  # fmt: skip
    bat = sc.get("batching", {})
    if bat.get("sweeps"):
        by_size: dict[str, Any] = {}
        for stops in sorted({w["stops"] for w in bat["sweeps"]}):
            rate = {w["batching"]: w["max_rate_rps"] for w in bat["sweeps"] if w["stops"] == stops}
            sat = {r["batching"]: r for r in bat["runs"] if r["stops"] == stops}
            on, off = rate.get("on"), rate.get("off")
            # Did sharing the search budget cost route quality? The saturation runs send one stream of bodies;
            # compare the answers to the bodies both runs answered (JSON keys are strings after a reload).
            routes_on = {str(k): v for k, v in sat.get("on", {}).get("route_s_by_body", {}).items()}
            routes_off = {str(k): v for k, v in sat.get("off", {}).get("route_s_by_body", {}).items()}
            common = sorted(set(routes_on) & set(routes_off))
            quality = [routes_on[k] / routes_off[k] - 1 for k in common if routes_off[k]]
            by_size[str(stops)] = {
                "on_max_rps": on, "off_max_rps": off,
                "ratio": round(on / off, 2) if on and off else None,
                "saturation_on_rps": sat.get("on", {}).get("throughput_rps"),
                "saturation_off_rps": sat.get("off", {}).get("throughput_rps"),
                "route_s_on_vs_off_pct": round(100 * float(np.mean(quality)), 3) if quality else None,
                "route_s_compared_bodies": len(quality),
                "met": bool(on and off and on / off >= 3.0),
            }  # fmt: skip
        out["batching_3x_throughput"] = {"met": all(v["met"] for v in by_size.values()),
                                         "p99_target_ms": SWEEP_P99_MS, "by_stops": by_size}  # fmt: skip
    cache_runs = sc.get("cache", {}).get("runs", [])
    if cache_runs:
        by_size = {}
        for stops in sorted({r["stops"] for r in cache_runs}):
            c = {r["cache"]: r for r in cache_runs if r["stops"] == stops}
            if "hit" in c and "miss" in c and c["miss"]["p99_ms"]:
                ratio = c["hit"]["p99_ms"] / c["miss"]["p99_ms"]
                by_size[str(stops)] = {"met": ratio < 0.1, "hit_p99_ms": c["hit"]["p99_ms"],
                                       "miss_p99_ms": c["miss"]["p99_ms"], "ratio": round(ratio, 3)}  # fmt: skip
        out["cache_hit_p99_under_tenth_of_miss"] = {"met": all(v["met"] for v in by_size.values()), "by_stops": by_size}
    c20 = [r for r in sc.get("c20", {}).get("runs", []) if r.get("time_budget_ms") == BUDGET_MS]
    if c20:
        out["20_stop_miss_p50_le_60ms"] = {"met": (c20[0]["p50_ms"] or math.inf) <= 60.0, "p50_ms": c20[0]["p50_ms"]}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: %(default)s")
    p.add_argument("--duration", type=float, default=None, help="seconds per load level (default 15; 1.5 with --quick)")
    p.add_argument(
        "--levels", default=None, help="closed-loop users per level (default 1,10,50,300; 1,10,300 with --quick)"
    )
    p.add_argument("--rates", default=None, help="open-loop rates, req/s, for batching and services "
                   f"(default: {', '.join(str(f) for f in RATE_FRACTIONS)} x the batched monolith's saturation)")  # fmt: skip
    p.add_argument("--cache-rate", type=float, default=10.0, help="open-loop rate of the cache scenario (req/s)")
    p.add_argument("--quick", action="store_true", help="smoke run (~1.5 min), does not update serving-latest.json")
    p.add_argument("--seed", type=int, default=20261128, help="random seed of the request bodies")
    p.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = wanted - set(SCENARIOS)
    if unknown:
        print(f"error: unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    duration = args.duration if args.duration is not None else (1.5 if args.quick else 15.0)
    levels = tuple(int(x) for x in args.levels.split(",")) if args.levels else ((1, 10, 300) if args.quick else LEVELS)
    rates = tuple(float(x) for x in args.rates.split(",")) if args.rates else None
    plan = Plan(duration, levels, args.seed, rates, args.cache_rate, args.quick, 1.5 if args.quick else 8.0)
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": "bench/serving.py", "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
        "options": {"scenarios": sorted(wanted), "duration_s": duration, "levels": list(levels),
                    "rates": list(rates) if rates else None, "rate_fractions": list(RATE_FRACTIONS),
                    "cache_rate": args.cache_rate, "seed": args.seed, "time_budget_ms": BUDGET_MS,
                    "late_ms": LATE_MS, "client_timeout_s": CLIENT_TIMEOUT_S, "bbox": list(BBOX),
                    "depart_at": DEPART_AT, "open_loop_connections": OPEN_LOOP_CONNECTIONS},
        "machine": machine_info(), "versions": versions(("fastapi", "starlette", "uvicorn", "httptools", "uvloop", "httpx", "onnxruntime", "numba", "numpy", "sqlalchemy", "psycopg", "redis", "pika", "orjson")), "git": git_info(),
        "other_benchmarks_at_start": other_benchmarks(), "setup": {}, "servers": {}, "scenarios": {},
    }  # fmt: skip
    log(f"bench/serving.py: {', '.join(s for s in SCENARIOS if s in wanted)}; {duration:g} s per level; "
        f"{result['machine']['cpus_usable']} CPUs, load {result['machine']['loadavg_start']}")  # fmt: skip
    if result["other_benchmarks_at_start"]:
        log(f"warning: other benchmarks are running: {result['other_benchmarks_at_start']}")
    t0 = time.perf_counter()
    try:
        with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
            tmp = Path(tmp_name)
            env = service_env(tmp)
            compile_model(env, tmp / "models")
            if wanted & {"c20", "concurrency", "cache", "batching"} or ("services" in wanted and not rates):
                run_monolith(env, tmp, plan, wanted, result)
            if "services" in wanted:
                run_services(env, tmp, plan, result)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["goals"] = goals(result)

    for name in SCENARIOS:
        runs = result["scenarios"].get(name, {}).get("runs")
        if runs:
            print(f"\n### {name}\n\n{runs_table(runs, KEYS[name])}\n\n{layers_table(runs, KEYS[name])}")
    for w in result["scenarios"].get("batching", {}).get("sweeps", []):
        print(
            f"\n### batching {w['batching']}, {w['stops']} stops: rate sweep (p99 target {w['p99_target_ms']:g} ms), "
            f"highest passing rate {w['max_rate_rps']}\n\n{runs_table(w['steps'], [('passed', 'passed')])}"
        )
    print("\n### goals\n")
    for name, g in result["goals"].items():
        print(f"- {name}: {'MET' if g['met'] else 'NOT MET'} {json.dumps({k: v for k, v in g.items() if k != 'met'})}")
    for name, info in result["servers"].items():
        warns = info.get("log_warnings")
        if warns:
            print(f"\n{name} log warnings: {json.dumps(warns, indent=1)}")
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        target = RESULTS / (f"serving-quick-{stamp}.json" if args.quick else f"serving-{stamp}.json")
        text = json.dumps(result, indent=1) + "\n"
        target.write_text(text)
        latest = RESULTS / "serving-latest.json"
        full = not args.quick and wanted == set(SCENARIOS)  # latest: the last full run, never a subset
        if full:
            latest.write_text(text)
        print(f"\nwrote {target.relative_to(REPO)}" + (f" and {latest.relative_to(REPO)}" if full else ""))
    print(
        f"wall {result['wall_s']:.0f} s; load {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
