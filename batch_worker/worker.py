"""The worker process: consume solve requests from RabbitMQ, batch them, reply, ack.

Three threads, each with one job (after pika's examples: long work off the I/O thread,
acks through ``add_callback_threadsafe``):

* the caller's thread runs the pika ``BlockingConnection``: it consumes with
  ``basic_qos(prefetch_count=max(prefetch, max_batch))`` and manual acks, publishes
  replies and acks;
* an event-loop thread runs the same ``Batcher`` the monolith uses (size/time window);
* the batcher's executor thread runs ``BatchSolver.solve_batch`` (model + search).

A message is acked only after its reply was published (and confirmed by the broker),
so a worker that dies mid-batch loses nothing: its unacked messages are delivered
again (to another worker, or to this one after it reconnects), and after
``delivery_limit`` deliveries they go to the dead-letter queue. Redelivery makes
duplicates, recognised by request id on both sides:

* the API answers the first reply for a correlation id and ignores (counts) any later
  one: it is what keeps a request answered once when a worker was killed after replying
  but before acking (``RabbitMQQueue``, ``unexpected_replies``);
* each worker remembers the ids it replied to in the last ``amqp.REPLIED_TTL_S`` seconds
  (bounded, in memory): a message for one of them (e.g. redelivered after this worker's
  connection dropped between reply and ack) is acked without being solved again.

Undecodable messages are rejected without requeue (to the dead-letter queue).
Connection errors reconnect with capped exponential backoff; channel errors (a refused
topology) end ``run_worker``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPConnectionError, NackError
from pika.spec import Basic, BasicProperties

from batch_worker.amqp import Backoff, QueueTopology, RepliedIds, connection_parameters, declare_topology, redact
from batch_worker.batcher import Batcher, BatchWindow, ProcessFn
from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from batch_worker.solver import BatchSolver
from routing_core.messages import MessageError, SolveReply, SolveRequest

log = logging.getLogger(__name__)


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer; reconnect (and redeclare) as after a connection error."""


@dataclass
class WorkerStats:
    """Counters of one ``run_worker`` call (read them from any thread)."""

    received: int = 0
    replied: int = 0
    duplicates: int = 0  # requests answered before (redelivered): acked without solving again
    rejected: int = 0  # undecodable or without reply_to: dead-lettered
    requeued: int = 0
    connects: int = 0
    connection_errors: int = 0
    consuming: bool = False


class _BatchLoop:
    """A ``Batcher`` on an event loop of its own thread, fed from other threads."""

    def __init__(self, process: ProcessFn, window: BatchWindow) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="batch-loop", daemon=True)
        self.batcher = Batcher(process, window.max_batch, window.max_wait_ms, window.max_queue)

    def __enter__(self) -> _BatchLoop:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.batcher.start(), self._loop).result(10.0)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.batcher.stop(drain=False), self._loop).result(60.0)
        except Exception:
            log.warning("stopping the batcher failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    def submit(self, request: SolveRequest) -> concurrent.futures.Future[SolveReply]:
        return asyncio.run_coroutine_threadsafe(self.batcher.submit(request), self._loop)


class _Session:
    """One connection's consumer: deliveries in, replies and acks out (all on the I/O thread)."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel, batches: _BatchLoop,
                 worker_id: str, stats: WorkerStats, replied: RepliedIds) -> None:  # fmt: skip
        self.connection = connection
        self.replied = replied
        self.channel = channel
        self.batches = batches
        self.worker_id = worker_id
        self.stats = stats
        self.in_flight = 0
        self.closed = False
        self.cancelled_by_broker = False

    def on_cancel(self, _frame: object) -> None:
        # The broker cancels a consumer when its queue is deleted or (in a cluster) moves: start over.
        self.cancelled_by_broker = True

    def on_message(self, channel: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
        self.stats.received += 1
        tag = method.delivery_tag
        try:
            request = SolveRequest.from_bytes(body)
        except MessageError as exc:
            log.warning("undecodable message %s rejected to the dead-letter queue: %s", props.message_id, exc)
            self.stats.rejected += 1
            channel.basic_reject(tag, requeue=False)
            return
        if not props.reply_to:
            log.warning("request %s has no reply_to; rejected to the dead-letter queue", request.request_id)
            self.stats.rejected += 1
            channel.basic_reject(tag, requeue=False)
            return
        if request.request_id in self.replied:
            # Answered already (its ack was lost with a connection): the API has that reply.
            log.info("request %s was answered before; acked without solving it again", request.request_id)
            self.stats.duplicates += 1
            channel.basic_ack(tag)
            return
        self.in_flight += 1
        future = self.batches.submit(request)
        future.add_done_callback(functools.partial(self._done, tag, props, request))

    def _done(self, tag: int, props: BasicProperties, request: SolveRequest,
              future: concurrent.futures.Future[SolveReply]) -> None:  # fmt: skip
        """Runs on the batch loop's thread: hand the outcome to the I/O thread."""
        try:
            self.connection.add_callback_threadsafe(functools.partial(self._finish, tag, props, request, future))
        except Exception as exc:  # connection gone: the broker delivers the message again
            log.debug("reply for %s dropped, connection closed: %r", request.request_id, exc)

    def _finish(self, tag: int, props: BasicProperties, request: SolveRequest,
                future: concurrent.futures.Future[SolveReply]) -> None:  # fmt: skip
        """Runs on the I/O thread: publish the reply, then ack."""
        self.in_flight -= 1
        if self.closed or not self.channel.is_open:
            return
        try:
            reply = future.result()
        except DeadlineExceeded:
            reply = SolveReply(request.request_id, error="deadline", worker=self.worker_id)
        except (QueueFull, QueueUnavailable, concurrent.futures.CancelledError) as exc:
            log.warning("request %s requeued: %r", request.request_id, exc)
            self.stats.requeued += 1
            self.channel.basic_nack(tag, requeue=True)
            return
        except Exception as exc:  # the batcher answers errors as replies; this is a last resort
            reply = SolveReply(request.request_id, error=f"internal: {exc}", worker=self.worker_id)
        reply_props = BasicProperties(content_type="application/json",
                                      correlation_id=props.correlation_id or request.request_id)  # fmt: skip
        # Confirmed publish (the channel is in confirm mode): the ack below follows a reply the broker holds.
        try:
            self.channel.basic_publish("", props.reply_to, reply.to_bytes(), reply_props)
        except NackError as exc:  # the broker would not take the reply: let the request come back
            log.warning("reply to %s refused by the broker, request requeued: %r", request.request_id, exc)
            self.stats.requeued += 1
            self.channel.basic_nack(tag, requeue=True)
            return
        self.replied.add(request.request_id)
        self.channel.basic_ack(tag)
        self.stats.replied += 1


def run_worker(amqp_url: str, queue_name: str, solver: BatchSolver, max_batch: int = 32, max_wait_ms: float = 5.0,
               prefetch: int = 64, stop_event: threading.Event | None = None, *, stats: WorkerStats | None = None,
               delivery_limit: int = 3, max_length: int = 100_000, backoff_initial_s: float = 0.2,
               backoff_cap_s: float = 10.0, drain_timeout_s: float = 10.0) -> None:  # fmt: skip
    """Serve ``queue_name`` until ``stop_event`` is set (blocks the calling thread).

    ``max_wait_ms`` is the batch window in milliseconds; ``prefetch`` the most unacked
    messages held (raised to ``max_batch`` when smaller). On stop, the batches running
    get up to ``drain_timeout_s`` to be answered; anything left unacked is redelivered to
    another worker. Raises on channel errors (a topology the broker refuses).
    """
    stop = stop_event or threading.Event()
    stats = stats if stats is not None else WorkerStats()
    prefetch_count = max(prefetch, max_batch)
    # Never more waiting than prefetched: QueueFull cannot happen here.
    window = BatchWindow(max_batch, max_wait_ms, max_queue=prefetch_count)
    topology = QueueTopology(queue_name, delivery_limit=delivery_limit, max_length=max_length)
    params = connection_parameters(amqp_url)
    backoff = Backoff(backoff_initial_s, backoff_cap_s)
    replied = RepliedIds()  # kept across reconnects: redelivered duplicates come after one
    with _BatchLoop(solver.solve_batch, window) as batches:
        while not stop.is_set():
            try:
                _serve(params, topology, prefetch_count, batches, solver.worker_id, stats, stop, backoff,
                       drain_timeout_s, replied)  # fmt: skip
            except (AMQPConnectionError, _ConsumerCancelled) as exc:
                stats.connection_errors += 1
                log.warning("worker %s: RabbitMQ at %s: %r; reconnecting", solver.worker_id, redact(amqp_url), exc)
            finally:
                stats.consuming = False
            if not stop.is_set():
                stop.wait(backoff.next_delay())
    log.info("worker %s stopped", solver.worker_id)


def _serve(params: pika.URLParameters, topology: QueueTopology, prefetch_count: int, batches: _BatchLoop,
           worker_id: str, stats: WorkerStats, stop: threading.Event, backoff: Backoff,
           drain_timeout_s: float, replied: RepliedIds) -> None:  # fmt: skip
    connection = BlockingConnection(params)
    session: _Session | None = None
    try:
        channel, kind = declare_topology(connection, topology)
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=prefetch_count)
        session = _Session(connection, channel, batches, worker_id, stats, replied)
        consumer_tag = channel.basic_consume(topology.name, session.on_message, auto_ack=False)
        stats.connects += 1
        stats.consuming = True
        backoff.reset()
        log.info("worker %s consuming %s queue %s (prefetch %d)", worker_id, kind, topology.name, prefetch_count)
        channel.add_on_cancel_callback(session.on_cancel)
        while not stop.is_set():
            connection.process_data_events(time_limit=0.25)
            if session.cancelled_by_broker:
                raise _ConsumerCancelled(f"the broker cancelled the consumer of {topology.name}")
        # Stop taking messages; answer and ack those received (up to drain_timeout_s). Any left
        # unacked go back to the queue when the connection closes.
        channel.basic_cancel(consumer_tag)
        stats.consuming = False
        until = time.monotonic() + drain_timeout_s
        while session.in_flight > 0 and time.monotonic() < until:
            connection.process_data_events(time_limit=0.1)
    finally:
        if session is not None:
            session.closed = True
        if connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("closing the RabbitMQ connection failed", exc_info=True)
