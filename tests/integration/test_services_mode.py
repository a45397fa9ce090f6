"""Services mode on the real servers: API (`routing serve --mode api`) + 2 workers (`routing worker`),
PostgreSQL for the map and request log, Redis for the route cache, RabbitMQ between them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import migrations
from graph_store.repository import MapRepository, make_engine
from routing_api.auth import TokenStore
from routing_api.model_service import ensure_compiled
from routing_api.model_training import CHECKPOINT
from tests.auth_helpers import bearer
from tests.conftest import require
from tests.servers import wait_until_ready

REDIS_URL = os.environ.get("ROUTING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("ROUTING_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _servers_up() -> None:
    import pika
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        require(False, f"Redis not reachable at {REDIS_URL}: {exc}")
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception as exc:
        require(False, f"RabbitMQ not reachable at {AMQP_URL}: {exc}")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path, module_postgres_db: str) -> Iterator[dict]:
    _servers_up()

    tmp = tmp_path_factory.mktemp("services")
    db_url = module_postgres_db
    engine = make_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    migrations.upgrade(engine)
    MapRepository(engine).import_map(helsinki_path)
    headers = bearer(TokenStore(engine).create("dispatcher", name="tests", rate_per_s=0))
    model_dir = tmp / "models"
    ensure_compiled(CHECKPOINT, model_dir)  # once, before the workers start
    run_id = uuid.uuid4().hex[:10]
    port = _free_port()
    env = {
        **os.environ, "ROUTING_DATABASE_URL": db_url, "ROUTING_REDIS_URL": REDIS_URL, "ROUTING_AMQP_URL": AMQP_URL,
        "ROUTING_QUEUE_NAME": f"routing-test-{run_id}", "ROUTING_CACHE_PREFIX": f"routing-test-{run_id}:",
        "ROUTING_MODEL_DIR": str(model_dir), "ROUTING_REQUEST_TIMEOUT_S": "120", "ROUTING_MAX_BATCH": "32",
        "ROUTING_MAX_WAIT_MS": "10", "ROUTING_MAX_QUEUE": "2000", "ROUTING_LOG_LEVEL": "warning",
    }  # fmt: skip
    cli = [sys.executable, "-m", "routing_api.cli"]
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("api", "w1", "w2")}  # noqa: SIM115
    procs = {
        "w1": subprocess.Popen([*cli, "worker", "--worker-id", "w1"], env=env, stdout=logs["w1"], stderr=subprocess.STDOUT),
        "w2": subprocess.Popen([*cli, "worker", "--worker-id", "w2"], env=env, stdout=logs["w2"], stderr=subprocess.STDOUT),
        "api": subprocess.Popen([*cli, "serve", "--mode", "api", "--port", str(port)], env=env, stdout=logs["api"],
                                stderr=subprocess.STDOUT),
    }  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        wait_until_ready(base, list(procs.values()), 240, tmp / "api.log")
        _wait_for_consumers(env["ROUTING_QUEUE_NAME"], 2, procs, deadline)
        yield {"base": base, "headers": headers, "engine": engine, "queue": env["ROUTING_QUEUE_NAME"],
               "prefix": env["ROUTING_CACHE_PREFIX"], "logs": tmp}  # fmt: skip
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
        _cleanup(env["ROUTING_QUEUE_NAME"], env["ROUTING_CACHE_PREFIX"])
        engine.dispose()


def _wait_for_consumers(queue: str, count: int, procs: dict, deadline: float) -> None:
    """Both workers consume before the load starts (a worker still compiling its search would miss it)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        while True:
            consumers = ch.queue_declare(queue, passive=True).method.consumer_count
            if consumers >= count:
                return
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                pytest.fail(f"{consumers} of {count} workers consuming (exited: {dead})")
            time.sleep(0.5)
    finally:
        conn.close()


def _cleanup(queue: str, prefix: str) -> None:
    import pika
    import redis

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for q in (queue, f"{queue}.dlq"):
        ch.queue_delete(q)
    ch.exchange_delete(f"{queue}.dlx")
    conn.close()
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=f"{prefix}*"):
        r.unlink(key)


def _bodies(count: int, seed: int) -> list[dict]:
    # distinct stop sets on the Helsinki centre extract, so every request is a cache miss
    rng = np.random.default_rng(seed)
    lat0, lat1, lon0, lon1 = 60.1650, 60.1780, 24.9370, 24.9520
    out = []
    for i in range(count):
        pts = np.column_stack((rng.uniform(lat0, lat1, 6), rng.uniform(lon0, lon1, 6)))
        out.append({
            "driver_id": f"load-{i}", "start": {"lat": pts[0, 0], "lon": pts[0, 1]},
            "stops": [{"id": f"p{k}", "lat": pts[k, 0], "lon": pts[k, 1]} for k in range(1, 6)],
            "options": {"time_budget_ms": 5},
        })  # fmt: skip
    return out


def test_api_and_two_workers_answer_300_concurrent_requests(services: dict) -> None:
    bodies = _bodies(300, seed=1)

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(
            base_url=services["base"], headers=services["headers"], timeout=180, limits=limits
        ) as client:
            return await asyncio.gather(*(client.post("/v1/routes", json=b) for b in bodies))

    responses = asyncio.run(fire())
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 300, (
        f"non-200 answers: {[(r.status_code, r.text[:200]) for r in responses if r.status_code != 200][:5]}"
    )
    answers = [r.json() for r in responses]
    workers = {a["served_by"]["worker"] for a in answers}
    assert workers == {"w1", "w2"}, f"served by {workers}"
    assert max(a["served_by"]["batch_size"] for a in answers) > 1, "requests were never batched"
    for body, a in zip(bodies, answers, strict=True):
        assert sorted(a["order"]) == sorted(s["id"] for s in body["stops"])
        assert a["cache"] == "miss"


def test_repeat_is_a_redis_cache_hit_and_the_log_is_in_postgres(services: dict) -> None:
    body = _bodies(1, seed=99)[0]
    with httpx.Client(base_url=services["base"], headers=services["headers"], timeout=60) as client:
        first = client.post("/v1/routes", json=body).json()
        second = client.post("/v1/routes", json=body).json()
        assert first["cache"] == "miss" and second["cache"] == "hit"
        assert second["order"] == first["order"]
        stored = client.get(f"/v1/routes/{first['route_id']}")
        assert stored.status_code == 200 and stored.json()["route_id"] == first["route_id"]
        metrics = client.get("/metrics").text
        assert "routing_batch_size_bucket" in metrics
    import redis

    keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{services['prefix']}*"))
    assert keys, "no route cached in Redis"
