"""The batcher: size/time window, N in N out in order, backpressure, deadlines, stats; the in-process queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from batch_worker.batcher import Batcher, BatchWindow
from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from batch_worker.queue import InProcessQueue
from routing_core.messages import SolveReply, SolveRequest
from tests.solve_requests import make_request

T = TypeVar("T")
LONG_WAIT_MS = 60_000.0  # a window that never closes on time during a test


class FakeProcess:
    """Answers each request with its own id; records every batch; can be held back or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_with: Exception | None = None

    def __call__(self, requests: list[SolveRequest]) -> list[SolveReply]:
        self.batches.append([r.request_id for r in requests])
        self.started.set()
        self.gate.wait(10.0)
        if self.fail_with is not None:
            raise self.fail_with
        return [SolveReply(r.request_id, order=(len(self.batches),), batch_size=len(requests)) for r in requests]


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(make(), 20.0))


async def _started(process: FakeProcess, **window: float) -> Batcher:
    b = Batcher(process, **window)  # type: ignore[arg-type]
    await b.start()
    return b


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def test_a_full_batch_is_released_without_waiting_for_the_window() -> None:
    process = FakeProcess()

    async def go() -> list[SolveReply]:
        b = await _started(process, max_batch=4, max_wait_ms=LONG_WAIT_MS)
        try:
            return await asyncio.gather(*(b.submit(make_request(f"r{i}")) for i in range(8)))
        finally:
            await b.stop()

    replies = run(go)
    assert [len(batch) for batch in process.batches] == [4, 4]
    assert [r.request_id for r in replies] == [f"r{i}" for i in range(8)]


def test_fewer_requests_are_released_when_the_oldest_has_waited_max_wait() -> None:
    process = FakeProcess()

    async def go() -> list[SolveReply]:
        b = await _started(process, max_batch=100, max_wait_ms=20.0)
        try:
            return await asyncio.gather(*(b.submit(make_request(f"r{i}")) for i in range(3)))
        finally:
            await b.stop()

    replies = run(go)
    assert process.batches == [["r0", "r1", "r2"]]
    assert all(r.batch_size == 3 for r in replies)


def test_n_in_n_out_in_order_across_batches() -> None:
    process = FakeProcess()
    ids = [f"req-{i}" for i in range(23)]

    async def go() -> list[SolveReply]:
        b = await _started(process, max_batch=5, max_wait_ms=1.0)
        try:
            return await asyncio.gather(*(b.submit(make_request(i)) for i in ids))
        finally:
            await b.stop()

    replies = run(go)
    assert [r.request_id for r in replies] == ids
    assert [i for batch in process.batches for i in batch] == ids  # submission order kept
    assert all(len(batch) <= 5 for batch in process.batches)


def test_a_process_that_raises_gives_every_request_of_its_batch_an_error_reply() -> None:
    process = FakeProcess()
    process.fail_with = RuntimeError("boom")

    async def go() -> list[SolveReply]:
        b = await _started(process, max_batch=3, max_wait_ms=LONG_WAIT_MS)
        try:
            return await asyncio.gather(*(b.submit(make_request(f"r{i}")) for i in range(3)))
        finally:
            await b.stop()

    replies = run(go)
    assert [r.request_id for r in replies] == ["r0", "r1", "r2"]
    assert all(r.error == "internal: boom" and r.order == () for r in replies)


def test_a_process_that_returns_the_wrong_number_of_replies_is_an_error_for_each() -> None:
    def short(requests: list[SolveRequest]) -> list[SolveReply]:
        return [SolveReply(requests[0].request_id)]

    async def go() -> list[SolveReply]:
        b = Batcher(short, max_batch=2, max_wait_ms=LONG_WAIT_MS)
        await b.start()
        try:
            return list(await asyncio.gather(b.submit(make_request("a")), b.submit(make_request("b"))))
        finally:
            await b.stop()

    replies = run(go)
    assert [r.request_id for r in replies] == ["a", "b"]
    assert all(r.error is not None and r.error.startswith("internal:") for r in replies)


def test_queue_full_when_max_queue_requests_wait() -> None:
    process = FakeProcess()
    process.gate.clear()

    async def go() -> None:
        b = await _started(process, max_batch=1, max_wait_ms=0.0, max_queue=2)
        try:
            running = asyncio.ensure_future(b.submit(make_request("running")))
            await _until(process.started.is_set)  # taken into a batch: no longer waiting
            waiting = [asyncio.ensure_future(b.submit(make_request(f"w{i}"))) for i in range(2)]
            await _until(lambda: b.stats().queue_depth == 2)
            with pytest.raises(QueueFull):
                await b.submit(make_request("one too many"))
            process.gate.set()
            replies = await asyncio.gather(running, *waiting)
            assert [r.request_id for r in replies] == ["running", "w0", "w1"]
            assert b.stats().rejected_full == 1
        finally:
            process.gate.set()
            await b.stop()

    run(go)


def test_deadline_exceeded_when_the_deadline_passes_before_the_reply() -> None:
    process = FakeProcess()
    process.gate.clear()

    async def go() -> None:
        b = await _started(process, max_batch=1, max_wait_ms=0.0)
        try:
            with pytest.raises(DeadlineExceeded):
                await b.submit(make_request("slow", deadline_in_s=0.05))
            with pytest.raises(DeadlineExceeded):
                await b.submit(make_request("late", deadline_in_s=-1.0))
            process.gate.set()
            assert b.stats().deadline_exceeded == 2
            # The batcher goes on serving.
            reply = await b.submit(make_request("next"))
            assert reply.request_id == "next"
        finally:
            process.gate.set()
            await b.stop()

    run(go)


def test_a_request_given_up_before_its_batch_is_not_processed() -> None:
    process = FakeProcess()
    process.gate.clear()

    async def go() -> None:
        b = await _started(process, max_batch=1, max_wait_ms=0.0)
        try:
            first = asyncio.ensure_future(b.submit(make_request("first")))
            await _until(process.started.is_set)
            with pytest.raises(DeadlineExceeded):
                await b.submit(make_request("abandoned", deadline_in_s=0.05))
            process.gate.set()
            await first
            await b.submit(make_request("after"))
        finally:
            process.gate.set()
            await b.stop()

    run(go)
    assert process.batches == [["first"], ["after"]]


def test_stats_count_batches_and_keep_recent_sizes() -> None:
    process = FakeProcess()

    async def go() -> Batcher:
        b = await _started(process, max_batch=4, max_wait_ms=LONG_WAIT_MS)
        await asyncio.gather(*(b.submit(make_request(f"a{i}")) for i in range(4)))
        await asyncio.gather(*(b.submit(make_request(f"b{i}")) for i in range(4)))
        await b.stop()
        return b

    b = run(go)
    s = b.stats()
    assert s.batches == 2 and s.requests == 8
    assert s.mean_batch_size == 4.0
    assert s.recent_batch_sizes == [4, 4]
    assert s.queue_depth == 0 and s.running == 0
    assert s.to_dict()["recent_batch_sizes"] == [4, 4]


def test_stop_with_drain_answers_the_waiting_requests() -> None:
    process = FakeProcess()

    async def go() -> list[SolveReply]:
        b = await _started(process, max_batch=10, max_wait_ms=LONG_WAIT_MS)
        pending = [asyncio.ensure_future(b.submit(make_request(f"r{i}"))) for i in range(3)]
        await _until(lambda: b.stats().queue_depth == 3)
        await b.stop(drain=True)
        return await asyncio.gather(*pending)

    replies = run(go)
    assert [r.request_id for r in replies] == ["r0", "r1", "r2"]


def test_stop_without_drain_fails_waiting_requests_and_refuses_new_ones() -> None:
    process = FakeProcess()

    async def go() -> None:
        b = await _started(process, max_batch=10, max_wait_ms=LONG_WAIT_MS)
        pending = asyncio.ensure_future(b.submit(make_request("w")))
        await _until(lambda: b.stats().queue_depth == 1)
        await b.stop(drain=False)
        with pytest.raises(QueueUnavailable):
            await pending
        with pytest.raises(QueueUnavailable):
            await b.submit(make_request("after"))

    run(go)
    assert process.batches == []


def test_the_process_runs_off_the_event_loop() -> None:
    process = FakeProcess()
    process.gate.clear()
    ticks = 0

    async def go() -> None:
        nonlocal ticks
        b = await _started(process, max_batch=1, max_wait_ms=0.0)
        try:
            job = asyncio.ensure_future(b.submit(make_request("blocking")))
            await _until(process.started.is_set)
            for _ in range(5):  # the loop keeps running while the batch blocks its thread
                await asyncio.sleep(0.001)
                ticks += 1
            process.gate.set()
            await job
        finally:
            process.gate.set()
            await b.stop()

    run(go)
    assert ticks == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be >= 1, got 0"),
        ({"max_wait_ms": -1.0}, "max_wait_ms must be a finite number >= 0, got -1.0"),
        ({"max_queue": 0}, "max_queue must be >= 1, got 0"),
    ],
)
def test_window_parameters_are_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchWindow(**kwargs)  # type: ignore[arg-type]


def test_window_rules() -> None:
    w = BatchWindow(max_batch=4, max_wait_ms=10.0)
    assert w.release_now(4, 0.0)
    assert not w.release_now(3, 0.005)
    assert w.release_now(1, 0.010)
    assert not w.release_now(0, 1.0)
    assert w.time_left_s(0.004) == pytest.approx(0.006)


def test_window_does_not_wait_for_requests_that_are_not_coming() -> None:
    w = BatchWindow(max_batch=4, max_wait_ms=10.0)
    # arrivals 1 ms apart: another is due well within the window, so wait
    assert not w.release_now(1, 0.0, expected_gap_s=0.001)
    # idle (the next one is expected in 1 s): go now, waiting would only add latency
    assert w.release_now(1, 0.0, expected_gap_s=1.0)
    # the next one is expected after the window would close: go now
    assert w.release_now(2, 0.004, expected_gap_s=0.007)
    assert not w.release_now(0, 0.0, expected_gap_s=1.0)


# -- the in-process adapter of the queue port ------------------------------------------


def test_in_process_queue_stamps_requests_and_reports() -> None:
    seen: list[SolveRequest] = []

    def process(requests: list[SolveRequest]) -> list[SolveReply]:
        seen.extend(requests)
        return [SolveReply(r.request_id, batch_size=len(requests)) for r in requests]

    async def go() -> None:
        q = InProcessQueue(Batcher(process, max_batch=8, max_wait_ms=1.0))
        assert not await q.ping()
        await q.start()
        assert await q.ping()
        before = time.time()
        replies = await asyncio.gather(*(q.solve(make_request(f"r{i}")) for i in range(5)))
        assert [r.request_id for r in replies] == [f"r{i}" for i in range(5)]
        assert all(before <= r.enqueued_at <= time.time() for r in seen)
        with pytest.raises(DeadlineExceeded):
            await q.solve(make_request("late", deadline_in_s=-1))
        stats = q.stats()
        assert stats["adapter"] == "in-process" and stats["requests"] == 5
        await q.stop()
        assert not await q.ping()
        with pytest.raises(QueueUnavailable):
            await q.solve(make_request("after"))

    run(go)
