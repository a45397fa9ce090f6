"""Collect solve requests into batches: released when full or when the oldest has waited long enough.

After Ray Serve's ``_BatchQueue``: ``submit`` puts a request in a queue and waits for its
reply; one background task takes up to ``max_batch`` requests as soon as that many wait,
or as soon as the oldest waiting one has waited ``max_wait_ms``, and runs the blocking
``process`` function on them in an executor (one worker thread by default, so the event
loop stays free), one batch at a time. ``process`` maps N requests to N replies in order;
should it raise, every request of that batch gets an error reply of its own.

Used in both deployment shapes: the API process owns one in the monolith, a worker
process owns one behind the RabbitMQ consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from routing_core.messages import SolveReply, SolveRequest

log = logging.getLogger(__name__)

RECENT_BATCHES = 256  # batch sizes kept for stats (a histogram's worth)
GAP_WEIGHT = 0.2  # weight of the newest gap in the mean gap between arrivals
GAP_CAP_S = 1.0  # gaps count at most this long (an idle minute is just "idle")

ProcessFn = Callable[[list[SolveRequest]], list[SolveReply]]


@dataclass(frozen=True)
class BatchWindow:
    """When a batch is released: ``max_batch`` requests, or the oldest has waited ``max_wait_ms``.

    ``max_queue`` bounds the requests waiting for a batch (not counting the one running).
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not (self.max_wait_ms >= 0 and math.isfinite(self.max_wait_ms)):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")

    def release_now(self, waiting: int, oldest_waited_s: float, expected_gap_s: float = 0.0) -> bool:
        """Whether a batch should go now, given how many wait, how long the oldest has waited and
        how long until the next request is expected (the recent mean gap between arrivals): when
        none is expected before the wait is up, waiting would only add latency."""
        if waiting <= 0:
            return False
        if waiting >= self.max_batch:
            return True
        return (oldest_waited_s + expected_gap_s) * 1e3 >= self.max_wait_ms

    def time_left_s(self, oldest_waited_s: float) -> float:
        """Seconds until the oldest request's wait is up (0 when it already is)."""
        return max(0.0, self.max_wait_ms / 1e3 - oldest_waited_s)


@dataclass(frozen=True)
class BatcherStats:
    queue_depth: int  # requests waiting for a batch
    running: int  # requests in the batch being processed
    batches: int
    requests: int  # requests that went into batches
    mean_batch_size: float
    recent_batch_sizes: list[int]  # the last RECENT_BATCHES batch sizes, oldest first
    rejected_full: int  # QueueFull raised
    deadline_exceeded: int  # DeadlineExceeded raised
    process_errors: int  # batches whose process function raised

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Waiting:
    request: SolveRequest
    future: asyncio.Future[SolveReply]
    since: float  # time.monotonic() when it joined the queue


class Batcher:
    """Size/time-window batching of solve requests in front of a blocking ``process`` function."""

    def __init__(self, process: ProcessFn, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 executor: Executor | None = None) -> None:  # fmt: skip
        self.window = BatchWindow(max_batch, max_wait_ms, max_queue)
        self._process = process
        self._executor = executor
        self._own_executor = executor is None
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._wakeup = asyncio.Event()  # binds to a loop on first use; start() makes a fresh one
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = 0
        self._batches = 0
        self._requests = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_BATCHES)
        self._rejected_full = 0
        self._deadline_exceeded = 0
        self._process_errors = 0
        # Mean gap between arrivals (exponentially weighted), seconds; starts as "idle".
        self._gap_s = GAP_CAP_S
        self._last_arrival = -math.inf

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    async def start(self) -> None:
        """Start the batching task on the running event loop (idempotent)."""
        if self.running:
            return
        if self._own_executor:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
            self._own_executor = True
        self._closing = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests; with ``drain`` answer the waiting ones first, else fail them.

        Requests that are refused or failed here get ``QueueUnavailable``.
        """
        if self._task is None:
            return
        self._closing = True
        if not drain:
            self._fail_waiting(QueueUnavailable("the batcher stopped"))
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._fail_waiting(QueueUnavailable("the batcher stopped"))
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def submit(self, request: SolveRequest) -> SolveReply:
        """Wait for the reply to ``request``.

        Raises ``QueueFull`` when ``max_queue`` requests wait already, ``DeadlineExceeded``
        when ``request.deadline`` (Unix time) passes first, ``QueueUnavailable`` when the
        batcher is not running.
        """
        if not self.running:
            raise QueueUnavailable("the batcher is not running")
        time_left = request.deadline - time.time()
        if time_left <= 0:
            self._deadline_exceeded += 1
            raise DeadlineExceeded(f"request {request.request_id}: deadline passed before it was queued")
        if len(self._queue) >= self.window.max_queue:
            self._rejected_full += 1
            raise QueueFull(f"{len(self._queue)} requests wait already (max_queue={self.window.max_queue})")
        if request.enqueued_at <= 0:
            request = replace(request, enqueued_at=time.time())
        future: asyncio.Future[SolveReply] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        self._gap_s += GAP_WEIGHT * (min(GAP_CAP_S, now - self._last_arrival) - self._gap_s)
        self._last_arrival = now
        self._queue.append(_Waiting(request, future, now))
        self._wakeup.set()
        try:
            # shield: a timeout must not cancel the future under a running batch's feet; we cancel it
            # ourselves below, so the batching task skips it if it has not been taken yet.
            return await asyncio.wait_for(asyncio.shield(future), time_left)
        except TimeoutError:
            self._deadline_exceeded += 1
            raise DeadlineExceeded(f"request {request.request_id}: deadline passed before its reply") from None
        finally:
            future.cancel()  # no-op when done

    def stats(self) -> BatcherStats:
        return BatcherStats(
            queue_depth=len(self._queue), running=self._running, batches=self._batches, requests=self._requests,
            mean_batch_size=self._requests / self._batches if self._batches else 0.0,
            recent_batch_sizes=list(self._recent), rejected_full=self._rejected_full,
            deadline_exceeded=self._deadline_exceeded, process_errors=self._process_errors,
        )  # fmt: skip

    # -- the batching task -------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            waited = time.monotonic() - self._queue[0].since
            if not self._closing and not self.window.release_now(len(self._queue), waited, self._gap_s):
                self._wakeup.clear()
                # Woken early by a new request (maybe the batch is full now), else when the oldest's wait is up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.window.time_left_s(waited))
                continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(loop, batch)

    def _drop_abandoned(self) -> None:
        """Requests whose submitter stopped waiting (deadline, cancellation) leave the queue."""
        if any(w.future.done() for w in self._queue):
            self._queue = collections.deque(w for w in self._queue if not w.future.done())

    def _take_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self.window.max_batch:
            w = self._queue.popleft()
            if not w.future.done():
                batch.append(w)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting]) -> None:
        requests = [w.request for w in batch]
        self._running = len(batch)
        self._batches += 1
        self._requests += len(batch)
        self._recent.append(len(batch))
        try:
            replies = await loop.run_in_executor(self._executor, self._process, requests)
            if len(replies) != len(requests):
                raise RuntimeError(f"process returned {len(replies)} replies for {len(requests)} requests")
        except Exception as exc:
            self._process_errors += 1
            log.exception("batch of %d failed", len(batch))
            replies = [SolveReply(request_id=r.request_id, error=f"internal: {exc}", batch_size=len(batch))
                       for r in requests]  # fmt: skip
        finally:
            self._running = 0
        for w, reply in zip(batch, replies, strict=True):
            if not w.future.done():
                w.future.set_result(reply)

    def _fail_waiting(self, exc: Exception) -> None:
        while self._queue:
            w = self._queue.popleft()
            if not w.future.done():
                w.future.set_exception(exc)
