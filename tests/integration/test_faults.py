"""Fault behaviour of the services mode on the real servers: API (`routing serve --mode api`) + 2
workers (`routing worker`) on PostgreSQL, Redis and RabbitMQ.

Every server is reached through a TCP proxy of the test (``TcpProxy``, in a process of its own:
``tests.proxy_process``): cutting it is a real network failure between the service and that server (the servers themselves, shared with other
runs, are never stopped). A worker is killed with SIGKILL, for real.

Failure behaviour checked (the README's "Failure behaviour" table):

* a worker killed mid-batch: its unacked requests go to the other worker; every request
  gets a route or an explicit 503/504, at least 99% a route;
* RabbitMQ unreachable under load: 503 + Retry-After (or 504 at the deadline, or answered
  after reconnecting), nothing hangs past the deadline; API and workers reconnect alone;
* Redis unreachable: routes served uncached; the cache is used again after it returns;
* PostgreSQL unreachable: routes served from the map in memory; the request log and
  positions wait in a bounded buffer and reach the database when it returns; /readyz
  says "degraded" (200), reads needing the database answer 503.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
from sqlalchemy import text

import migrations
from graph_store.repository import MapRepository, make_engine
from routing_api.auth import TokenStore
from routing_api.model_service import ensure_compiled
from routing_api.model_training import CHECKPOINT
from tests.auth_helpers import bearer
from tests.integration.test_services_mode import AMQP_URL, REDIS_URL, _cleanup, _free_port, _servers_up
from tests.proxy_process import ProxyProcess

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq]

REQUEST_TIMEOUT_S = 20.0  # ROUTING_REQUEST_TIMEOUT_S of the API under test
CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 15.0  # a request still open past this has hung
EXPLICIT_FAILURES = {503, 504}


def _via(url: str, proxy: ProxyProcess) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _upstream(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Services:
    """The API and two workers as subprocesses, every server behind a proxy of ours."""

    def __init__(self, tmp: Path, env: dict[str, str], port: int, proxies: dict[str, ProxyProcess], engine: Any,
                 headers: dict[str, str]) -> None:  # fmt: skip
        self.tmp = tmp
        self.env = env
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.proxies = proxies
        self.engine = engine  # direct to PostgreSQL (not through the proxy): what is really stored
        self.headers = headers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    def start(self, name: str) -> None:
        cli = [sys.executable, "-m", "routing_api.cli"]
        args = (
            ["serve", "--mode", "api", "--port", str(self.port)] if name == "api" else ["worker", "--worker-id", name]
        )
        log = self._logs.get(name) or open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self._logs[name] = log
        self.procs[name] = subprocess.Popen([*cli, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        self._logs[name].flush()
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._logs.values():
            f.close()

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=CLIENT_TIMEOUT_S, **kw)

    def ready(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/readyz", timeout=5)
        return {"http": r.status_code, **r.json()}

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
        until = time.monotonic() + timeout_s
        while True:
            try:
                if condition():
                    return
            except httpx.HTTPError:
                pass
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > until:
                pytest.fail(f"{what}: not within {timeout_s} s (exited: {dead}); api log:\n{self.log_tail('api')}")
            time.sleep(0.25)

    def metric(self, name: str) -> float:
        """The sum of every sample of metric ``name`` in /metrics."""
        text_ = httpx.get(f"{self.base}/metrics", headers=self.headers, timeout=10).text
        total = 0.0
        for line in text_.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def worker_consumers(self) -> int:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            return int(conn.channel().queue_declare(self.env["ROUTING_QUEUE_NAME"], passive=True)
                       .method.consumer_count)  # fmt: skip
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            conn.close()


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path, module_postgres_db: str
) -> Iterator[Services]:
    _servers_up()
    import pika

    tmp = tmp_path_factory.mktemp("faults")
    db_url = module_postgres_db
    engine = make_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    proxies: dict[str, ProxyProcess] = {}
    svc: Services | None = None
    run_id = uuid.uuid4().hex[:10]
    queue, prefix = f"routing-test-{run_id}", f"routing-test-{run_id}:"
    try:
        migrations.upgrade(engine)
        MapRepository(engine).import_map(helsinki_path)
        headers = bearer(TokenStore(engine).create("dispatcher", name="fault-tests", rate_per_s=0))
        model_dir = tmp / "models"
        ensure_compiled(CHECKPOINT, model_dir)  # once, before the workers start
        amqp = pika.URLParameters(AMQP_URL)
        proxies = {
            "postgres": ProxyProcess(_upstream(db_url, 5432)),
            "redis": ProxyProcess(_upstream(REDIS_URL, 6379)),
            "rabbitmq": ProxyProcess((amqp.host, amqp.port)),
        }
        env = {
            **os.environ, "ROUTING_DATABASE_URL": _via(db_url, proxies["postgres"]),
            "ROUTING_REDIS_URL": _via(REDIS_URL, proxies["redis"]), "ROUTING_AMQP_URL": _via(AMQP_URL, proxies["rabbitmq"]),
            "ROUTING_QUEUE_NAME": queue, "ROUTING_CACHE_PREFIX": prefix, "ROUTING_MODEL_DIR": str(model_dir),
            "ROUTING_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S), "ROUTING_MAX_BATCH": "16", "ROUTING_MAX_WAIT_MS": "10",
            "ROUTING_MAX_QUEUE": "2000", "ROUTING_LOG_LEVEL": "warning",
        }  # fmt: skip
        svc = Services(tmp, env, _free_port(), proxies, engine, headers)
        for name in ("w1", "w2", "api"):
            svc.start(name)
        svc.wait_until(lambda: svc.ready()["http"] == 200 and svc.worker_consumers() == 2, "services ready", 180)
        yield svc
    finally:
        if svc is not None:
            svc.stop_all()
        for proxy in proxies.values():
            proxy.close()
        _cleanup(queue, prefix)
        engine.dispose()


def _bodies(count: int, seed: int, budget_ms: float = 5.0) -> list[dict[str, Any]]:
    """Distinct stop sets on the Helsinki centre (every one a cache miss)."""
    rng = np.random.default_rng(seed)
    lat0, lat1, lon0, lon1 = 60.1650, 60.1780, 24.9370, 24.9520
    out = []
    for i in range(count):
        pts = np.column_stack((rng.uniform(lat0, lat1, 7), rng.uniform(lon0, lon1, 7)))
        out.append({
            "driver_id": f"fault-{seed}-{i}", "start": {"lat": pts[0, 0], "lon": pts[0, 1]},
            "stops": [{"id": f"p{k}", "lat": pts[k, 0], "lon": pts[k, 1]} for k in range(1, 7)],
            "options": {"time_budget_ms": budget_ms},
        })  # fmt: skip
    return out


Outcome = tuple[int, dict[str, Any], dict[str, str]]  # status, body, headers


async def _fire(svc: Services, bodies: list[dict[str, Any]], during: Callable[[list[Outcome]], Any] | None = None,
                stagger_s: float = 0.0) -> list[Outcome]:  # fmt: skip
    """POST every body concurrently (``stagger_s`` apart); ``during(done)`` runs alongside, seeing the
    answers so far. Returns the answers in the order they came. A request that hangs past
    ``CLIENT_TIMEOUT_S`` fails the test (httpx raises)."""
    done: list[Outcome] = []
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=svc.base, headers=svc.headers, timeout=CLIENT_TIMEOUT_S,
                                 limits=limits) as client:  # fmt: skip

        async def one(i: int, body: dict[str, Any]) -> Outcome:
            await asyncio.sleep(i * stagger_s)
            r = await client.post("/v1/routes", json=body)
            outcome = (r.status_code, r.json(), dict(r.headers))
            done.append(outcome)
            return outcome

        tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies)]
        side = asyncio.create_task(during(done)) if during is not None else None
        await asyncio.gather(*tasks)
        if side is not None:
            await side
    return done


def _check_explicit(outcomes: list[Outcome]) -> tuple[int, list[Outcome]]:
    """Routes answered, and every other answer (each must be an explicit 503 with Retry-After, or 504)."""
    routes = 0
    others = []
    for status, body, headers in outcomes:
        if status == 200:
            assert body["order"] and body["legs"], body
            routes += 1
            continue
        others.append((status, body, headers))
        assert status in EXPLICIT_FAILURES, (status, body)
        if status == 503:
            assert "retry-after" in headers, headers
    return routes, others


def test_redis_down_routes_are_served_uncached_and_the_cache_comes_back(services: Services) -> None:
    svc = services
    a, b = _bodies(2, seed=11)
    with svc.client() as client:
        svc.proxies["redis"].cut()
        try:
            first = client.post("/v1/routes", json=a)
            again = client.post("/v1/routes", json=a)
            assert first.status_code == 200 and again.status_code == 200, (first.text, again.text)
            assert first.json()["cache"] == "miss" and again.json()["cache"] == "miss"  # nothing cached: no Redis
            assert again.json()["order"] == first.json()["order"]
            ready = svc.ready()
            assert ready["http"] == 200 and ready["status"] == "degraded", ready
            assert ready["checks"]["cache"] == "unreachable" and ready["degraded"] == ["cache"]
        finally:
            svc.proxies["redis"].restore()
        svc.wait_until(lambda: svc.ready()["status"] == "ready", "cache reachable again")
        assert client.post("/v1/routes", json=b).json()["cache"] == "miss"
        assert client.post("/v1/routes", json=b).json()["cache"] == "hit"  # stored in Redis again


def test_postgres_down_routes_are_served_and_the_log_is_written_when_it_returns(services: Services) -> None:
    svc = services
    bodies = _bodies(6, seed=12)
    position = {"lat": 60.17, "lon": 24.94, "timestamp": "2026-11-30T08:00:00Z", "speed_mps": 5.0}
    failures_before = svc.metric("routing_persist_failures_total")
    with svc.client() as client:
        svc.proxies["postgres"].cut()
        try:
            answers = [client.post("/v1/routes", json=b) for b in bodies]
            assert [r.status_code for r in answers] == [200] * len(bodies), [r.text[:200] for r in answers]
            route_ids = [r.json()["route_id"] for r in answers]
            # Read back from the buffer: the database has not seen it yet.
            stored = client.get(f"/v1/routes/{route_ids[0]}")
            assert stored.status_code == 200 and stored.json()["order"] == answers[0].json()["order"]
            pinged = client.post("/v1/drivers/fault-12-0/positions", json=position)
            assert pinged.status_code == 202, pinged.text
            listing = client.get("/v1/drivers")  # needs the database: an explicit, retryable 503
            assert listing.status_code == 503 and "retry-after" in listing.headers, listing.text
            assert listing.json()["detail"][0]["kind"] == "database_unavailable"
            ready = svc.ready()
            assert ready["http"] == 200 and ready["status"] == "degraded", ready
            assert ready["checks"]["database"] == "unreachable" and "database" in ready["degraded"]
            svc.wait_until(lambda: svc.metric("routing_persist_failures_total") > failures_before,
                           "persistence failures counted", 30)  # fmt: skip
            assert svc.metric("routing_persist_buffered") >= len(bodies) + 1
            with svc.engine.connect() as conn:  # straight to PostgreSQL: nothing written yet
                found = conn.execute(text("SELECT count(*) FROM route_requests WHERE route_id = ANY(:ids)"),
                                     {"ids": route_ids}).scalar_one()  # fmt: skip
            assert found == 0
        finally:
            svc.proxies["postgres"].restore()
        svc.wait_until(lambda: svc.metric("routing_persist_buffered") == 0, "buffer written", 60)
        with svc.engine.connect() as conn:
            found = conn.execute(text("SELECT count(*) FROM route_requests WHERE route_id = ANY(:ids)"),
                                 {"ids": route_ids}).scalar_one()  # fmt: skip
            pings = conn.execute(text("SELECT count(*) FROM driver_positions WHERE driver_id = 'fault-12-0'"))
            assert found == len(bodies) and pings.scalar_one() == 1
        svc.wait_until(lambda: svc.ready()["status"] == "ready", "database reachable again")
        drivers = {d["driver_id"]: d for d in client.get("/v1/drivers").json()}
        assert drivers["fault-12-0"]["current_route_id"] == route_ids[0]
    assert svc.metric("routing_persist_dropped_total") == 0


def test_rabbitmq_cut_under_load_answers_explicitly_and_both_sides_reconnect(services: Services) -> None:
    svc = services
    bodies = _bodies(120, seed=13)

    async def cut_then_restore(done: list[Outcome]) -> None:
        while len(done) < 20:  # some answered before the cut
            await asyncio.sleep(0.01)
        svc.proxies["rabbitmq"].cut()
        await asyncio.sleep(3.0)
        svc.proxies["rabbitmq"].restore()

    outcomes = asyncio.run(_fire(svc, bodies, cut_then_restore, stagger_s=0.02))
    routes, others = _check_explicit(outcomes)
    assert routes >= 20 and others, f"{routes} routes, {len(others)} others: the cut did not fall under load"
    svc.wait_until(lambda: svc.ready()["checks"]["queue"] == "ok" and svc.worker_consumers() == 2,
                   "API and both workers reconnected", 90)  # fmt: skip
    after = asyncio.run(_fire(svc, _bodies(20, seed=14)))
    assert [status for status, _, _ in after] == [200] * 20, [o[1] for o in after if o[0] != 200][:3]


def test_a_worker_killed_mid_batch_loses_no_request(services: Services) -> None:
    svc = services
    bodies = _bodies(200, seed=15, budget_ms=30.0)
    killed: list[int] = []

    async def kill_w1(done: list[Outcome]) -> None:
        # w1 has answered some and holds unacked requests (its prefetch) when it dies.
        while sum(1 for s, b, _ in done if s == 200 and b["served_by"]["worker"] == "w1") < 5:
            await asyncio.sleep(0.005)
        svc.procs["w1"].send_signal(signal.SIGKILL)
        killed.append(len(done))

    try:
        outcomes = asyncio.run(_fire(svc, bodies, kill_w1))
        assert killed and killed[0] < len(bodies), "w1 was not killed while requests were in flight"
        assert svc.procs["w1"].wait(10) == -signal.SIGKILL
        routes, others = _check_explicit(outcomes)
        assert routes >= 0.99 * len(bodies), f"only {routes} of {len(bodies)} routed: {others[:3]}"
        served = {b["served_by"]["worker"] for s, b, _ in outcomes if s == 200}
        late_w2 = sum(1 for s, b, _ in outcomes[killed[0] :] if s == 200 and b["served_by"]["worker"] == "w2")
        assert served == {"w1", "w2"} and late_w2 > 0
        # A request w1 answered but had not acked yet is solved again by w2: its second reply is
        # recognised by request id and ignored (counted here), never a second answer.
        metrics = httpx.get(f"{svc.base}/metrics", headers=svc.headers, timeout=10).text
        assert "routing_queue_duplicate_replies_total" in metrics
        assert len({b["route_id"] for s, b, _ in outcomes if s == 200}) == routes
        for status, body, _ in outcomes:
            if status == 200:
                assert sorted(body["order"]) == [f"p{k}" for k in range(1, 7)]
    finally:
        svc.start("w1")  # back to two workers
        svc.wait_until(lambda: svc.worker_consumers() == 2, "w1 restarted", 120)
