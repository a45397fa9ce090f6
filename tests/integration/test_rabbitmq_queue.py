"""The RabbitMQ adapter of the queue port with real workers, against a real RabbitMQ server.

Each test uses its own queue (uuid) and deletes it, its dead-letter queue and exchange
afterwards. Workers run ``run_worker`` in threads with the plain search (backend None).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pika
import pytest

from batch_worker.amqp import QueueTopology, declare_topology
from batch_worker.errors import DeadlineExceeded, QueueUnavailable
from batch_worker.queue import RabbitMQQueue
from batch_worker.solver import BatchSolver
from batch_worker.worker import WorkerStats, run_worker
from gnn_model.search import warm_up
from routing_core.messages import SolveReply, SolveRequest
from routing_core.problem import evaluate
from tests.conftest import require
from tests.solve_requests import make_request
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

AMQP_URL = os.environ.get("ROUTING_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
T = TypeVar("T")


@pytest.fixture(scope="module")
def amqp_url() -> str:
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPError as exc:
        require(False, f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}")
    warm_up()
    return AMQP_URL


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    name = f"test.solve.{uuid.uuid4().hex[:12]}"
    yield name
    topology = QueueTopology(name)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_delete(topology.name)
        ch.queue_delete(topology.dead_letter_queue)
        ch.exchange_delete(topology.dead_letter_exchange)
    finally:
        conn.close()


@contextlib.contextmanager
def running_worker(amqp_url: str, queue: str, worker_id: str, **options: Any) -> Iterator[WorkerStats]:
    stop = threading.Event()
    stats = WorkerStats()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_worker(amqp_url, queue, BatchSolver(None, worker_id), stop_event=stop, stats=stats, **options)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"worker-{worker_id}", daemon=True)
    thread.start()
    try:
        wait_for(lambda: stats.consuming or bool(errors), what=f"worker {worker_id} consuming")
        assert not errors, errors
        yield stats
    finally:
        stop.set()
        thread.join(20.0)
        assert not thread.is_alive(), f"worker {worker_id} did not stop"
        assert not errors, errors


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"{what}: not met within {timeout_s} s")
        time.sleep(0.01)


def consumers(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:  # not declared yet
        return 0
    finally:
        conn.close()


def run(make: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(make(), timeout_s))


def assert_route(request: SolveRequest, reply: SolveReply) -> None:
    assert reply.request_id == request.request_id
    assert reply.error is None, reply.error
    assert evaluate(request.problem, reply.order).valid


def test_fifty_concurrent_solves_are_answered_in_batches(amqp_url: str, queue_name: str) -> None:
    requests = [make_request(f"r{i}-{uuid.uuid4().hex[:6]}", seed=i, n_stops=4 + i % 15) for i in range(50)]

    async def go() -> tuple[list[SolveReply], dict[str, Any]]:
        q = RabbitMQQueue(amqp_url, queue_name, "api-1")
        await q.start()
        try:
            assert await q.ping()
            replies = await asyncio.gather(*(q.solve(r) for r in requests))
            return replies, q.stats()
        finally:
            await q.stop()

    with running_worker(amqp_url, queue_name, "w1", max_batch=16, max_wait_ms=20.0) as stats:
        replies, qstats = run(go)
    for req, rep in zip(requests, replies, strict=True):
        assert_route(req, rep)
        assert rep.worker == "w1" and rep.backend == "none"
    assert max(r.batch_size for r in replies) > 1
    assert stats.replied == 50 and stats.rejected == 0
    assert qstats["published"] == 50 and qstats["replies"] == 50 and qstats["queue_kind"] == "quorum"


def test_two_workers_share_the_queue(amqp_url: str, queue_name: str) -> None:
    requests = [make_request(f"r{i}", seed=i, n_stops=6) for i in range(40)]

    async def go() -> list[SolveReply]:
        q = RabbitMQQueue(amqp_url, queue_name, "api-2")
        await q.start()
        try:
            return await asyncio.gather(*(q.solve(r) for r in requests))
        finally:
            await q.stop()

    options = {"max_batch": 4, "max_wait_ms": 5.0, "prefetch": 4}
    with running_worker(amqp_url, queue_name, "wa", **options), running_worker(amqp_url, queue_name, "wb", **options):
        wait_for(lambda: consumers(amqp_url, queue_name) == 2, what="two consumers")
        replies = run(go)
    for req, rep in zip(requests, replies, strict=True):
        assert_route(req, rep)
    assert {r.worker for r in replies} == {"wa", "wb"}


def test_an_undecodable_message_ends_in_the_dead_letter_queue(amqp_url: str, queue_name: str) -> None:
    topology = QueueTopology(queue_name)
    with running_worker(amqp_url, queue_name, "w1") as stats:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch, _ = declare_topology(conn, topology)
            ch.basic_publish("", queue_name, b"{not json", pika.BasicProperties(delivery_mode=2, reply_to="nobody"))
            wait_for(lambda: stats.rejected == 1, what=f"rejected (stats {stats})")
            got: list[tuple[Any, bytes]] = []

            def dead_lettered() -> bool:
                method, props, body = ch.basic_get(topology.dead_letter_queue, auto_ack=True)
                if method is not None:
                    got.append((props, body))
                return bool(got)

            wait_for(dead_lettered, what="a message in the dead-letter queue")
        finally:
            conn.close()
    props, body = got[0]
    assert body == b"{not json"
    assert props.headers["x-death"][0]["reason"] == "rejected"
    assert stats.replied == 0


def test_a_request_past_its_deadline_gets_no_route(amqp_url: str, queue_name: str) -> None:
    async def api_side() -> None:
        q = RabbitMQQueue(amqp_url, queue_name, "api-3")
        await q.start()
        try:
            with pytest.raises(DeadlineExceeded):
                await q.solve(make_request("already-late", deadline_in_s=-1.0))
            # Expires while no worker consumes: the API gives up at the deadline, the broker drops it.
            with pytest.raises(DeadlineExceeded):
                await q.solve(make_request("expires-in-the-queue", deadline_in_s=0.2))
        finally:
            await q.stop()

    run(api_side)

    # A message whose deadline passed but that the broker still delivered (no TTL, a skewed clock):
    # the worker answers "deadline", not a route.
    late = make_request("late-at-the-worker", deadline_in_s=-5.0)
    with running_worker(amqp_url, queue_name, "w1"):
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch = conn.channel()
            reply_queue = ch.queue_declare("", exclusive=True).method.queue
            ch.basic_publish("", queue_name, late.to_bytes(),
                             pika.BasicProperties(reply_to=reply_queue, correlation_id=late.request_id))  # fmt: skip
            answers: list[SolveReply] = []

            def answered() -> bool:
                method, _props, body = ch.basic_get(reply_queue, auto_ack=True)
                if method is not None:
                    answers.append(SolveReply.from_bytes(body))
                return bool(answers)

            wait_for(answered, what="a reply")
        finally:
            conn.close()
    assert answers[0].request_id == "late-at-the-worker"
    assert answers[0].error == "deadline" and answers[0].order == ()


def test_a_second_reply_for_the_same_request_is_ignored(amqp_url: str, queue_name: str) -> None:
    request = make_request("dup")

    async def go() -> dict[str, Any]:
        q = RabbitMQQueue(amqp_url, queue_name, "api-4")
        await q.start()
        try:
            reply = await q.solve(request)
            assert_route(request, reply)
            assert q.reply_queue is not None
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            try:
                conn.channel().basic_publish("", q.reply_queue, reply.to_bytes(),
                                             pika.BasicProperties(correlation_id="dup"))  # fmt: skip
            finally:
                conn.close()
            for _ in range(200):
                if q.stats()["unexpected_replies"] == 1:
                    break
                await asyncio.sleep(0.01)
            again = await q.solve(make_request("after-dup"))  # still serving
            assert again.error is None
            return q.stats()
        finally:
            await q.stop()

    with running_worker(amqp_url, queue_name, "w1"):
        stats = run(go)
    assert stats["unexpected_replies"] == 1 and stats["replies"] == 2


def test_queue_unavailable_quickly_when_the_broker_is_unreachable() -> None:
    async def go() -> None:
        q = RabbitMQQueue("amqp://guest:guest@127.0.0.1:1/%2F", f"test.solve.{uuid.uuid4().hex[:12]}", "api-x")
        t0 = time.monotonic()
        await q.start()
        try:
            assert not await q.ping()
            with pytest.raises(QueueUnavailable):
                await q.solve(make_request("r"))
        finally:
            await q.stop()
        assert time.monotonic() - t0 < 5.0
        assert q.stats()["connection_errors"] >= 1

    run(go)


def test_python_m_batch_worker_serves_and_stops_on_sigterm(amqp_url: str, queue_name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch_worker", "--amqp-url", amqp_url, "--queue", queue_name, "--backend", "none",
         "--max-batch", "8", "--max-wait-ms", "5", "--worker-id", "proc-1", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: consumers(amqp_url, queue_name) == 1 or proc.poll() is not None, 30.0, "the worker consuming")
        assert proc.poll() is None, proc.communicate()[0]
        requests = [make_request(f"p{i}", seed=i, n_stops=5) for i in range(10)]

        async def go() -> list[SolveReply]:
            q = RabbitMQQueue(amqp_url, queue_name, "api-5")
            await q.start()
            try:
                return await asyncio.gather(*(q.solve(r) for r in requests))
            finally:
                await q.stop()

        replies = run(go)
        for req, rep in zip(requests, replies, strict=True):
            assert_route(req, rep)
            assert rep.worker == "proc-1"
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20.0)[0]
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_both_sides_reconnect_after_the_network_fails(amqp_url: str, queue_name: str) -> None:
    params = pika.URLParameters(amqp_url)
    proxy = TcpProxy((params.host, params.port))
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
    options = {"backoff_initial_s": 0.05, "backoff_cap_s": 0.2}

    async def go() -> None:
        q = RabbitMQQueue(via_proxy, queue_name, "api-6", backoff_initial_s=0.05, backoff_cap_s=0.2)
        await q.start()
        try:
            assert (await q.solve(make_request("before"))).error is None
            proxy.cut()
            for _ in range(500):  # the I/O thread notices the lost connection
                if not await q.ping():
                    break
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(QueueUnavailable):
                await q.solve(make_request("during"))
            assert time.monotonic() - t0 < 1.0
            proxy.restore()
            for _ in range(1000):
                if await q.ping():
                    break
                await asyncio.sleep(0.01)
            assert await q.ping()
            reply = await q.solve(make_request("after"))
            assert reply.error is None and reply.request_id == "after"
            assert q.stats()["connects"] >= 2
        finally:
            await q.stop()

    try:
        with running_worker(via_proxy, queue_name, "w1", **options) as stats:
            run(go)
        assert stats.connects >= 2 and stats.connection_errors >= 1
    finally:
        proxy.close()


def test_a_deleted_request_queue_is_declared_again(amqp_url: str, queue_name: str) -> None:
    async def go() -> None:
        q = RabbitMQQueue(amqp_url, queue_name, "api-7", backoff_initial_s=0.05, backoff_cap_s=0.2)
        await q.start()
        try:
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            try:
                conn.channel().queue_delete(queue_name)
            finally:
                conn.close()
            with pytest.raises(QueueUnavailable, match="does not exist"):
                await q.solve(make_request("lost", deadline_in_s=5.0))
            for _ in range(500):
                if await q.ping() and consumers(amqp_url, queue_name) == 0 and q.stats()["connects"] >= 2:
                    break
                await asyncio.sleep(0.01)
            assert q.stats()["connects"] >= 2
            with running_worker(amqp_url, queue_name, "w1"):
                assert (await q.solve(make_request("found"))).error is None
        finally:
            await q.stop()

    run(go)
