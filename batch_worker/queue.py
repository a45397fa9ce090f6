"""The queue port the API talks to, and its two adapters.

* ``InProcessQueue``: the monolith; a ``Batcher`` in this process does the work.
* ``RabbitMQQueue``: the services shape; requests go through RabbitMQ to worker
  processes (``batch_worker.worker``) and replies come back on a reply queue of this
  API instance.

Every adapter answers ``solve`` with the worker's ``SolveReply`` or raises one of
``QueueFull`` / ``QueueUnavailable`` (503 + Retry-After) or ``DeadlineExceeded`` (504).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPChannelError, AMQPConnectionError, AMQPError, NackError, UnroutableError
from pika.spec import Basic, BasicProperties

from batch_worker.amqp import Backoff, QueueTopology, RepliedIds, connection_parameters, declare_topology, redact
from batch_worker.batcher import Batcher
from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from routing_core.messages import MessageError, SolveReply, SolveRequest

log = logging.getLogger(__name__)


class SolveQueue(abc.ABC):
    """Where the API sends a problem and gets its answer (the API side of the queue)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def solve(self, request: SolveRequest) -> SolveReply:
        """The reply to ``request``; raises ``DeadlineExceeded`` once ``request.deadline`` (Unix
        time) has passed, ``QueueFull`` / ``QueueUnavailable`` when the request cannot be taken."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """JSON-ready counters; ``adapter`` names the adapter."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether requests can be taken now (for ``/readyz``)."""


class InProcessQueue(SolveQueue):
    """The monolith's queue: the batcher of this very process."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher

    async def start(self) -> None:
        await self.batcher.start()

    async def solve(self, request: SolveRequest) -> SolveReply:
        return await self.batcher.submit(replace(request, enqueued_at=time.time()))

    async def stop(self) -> None:
        await self.batcher.stop(drain=True)

    def stats(self) -> dict[str, Any]:
        return {"adapter": "in-process", **self.batcher.stats().to_dict()}

    async def ping(self) -> bool:
        return self.batcher.running


# -- RabbitMQ --------------------------------------------------------------------------


class _TopologyLost(Exception):
    """The request queue was deleted under us: reconnect, which declares it again."""


@dataclass
class _Call:
    """One solve waiting: for the broker's publisher confirm, then for the worker's reply."""

    request_id: str
    generation: int  # the connection it was published on
    confirmed: asyncio.Future[None]
    reply: asyncio.Future[SolveReply]


@dataclass
class _Link:
    """The live connection (touched only by the I/O thread, except ``add_callback_threadsafe``)."""

    connection: BlockingConnection
    channel: BlockingChannel
    reply_queue: str
    generation: int


@dataclass
class _Counters:
    published: int = 0
    replies: int = 0
    unexpected_replies: int = 0  # late (the caller gave up) or duplicate (a redelivered request)
    duplicate_replies: int = 0  # of those: a second reply for a request answered already
    bad_replies: int = 0
    rejected_full: int = 0
    unavailable: int = 0
    deadline_exceeded: int = 0
    connects: int = 0
    connection_errors: int = 0
    last_error: str = ""
    queue_kind: str = ""


class RabbitMQQueue(SolveQueue):
    """Requests to a durable RabbitMQ queue, replies on an exclusive queue of this API instance.

    A dedicated I/O thread owns one pika ``BlockingConnection`` (pika connections are not
    thread-safe); the event loop hands it work through ``add_callback_threadsafe`` and
    gets results back through ``loop.call_soon_threadsafe``. Messages are persistent,
    published with publisher confirms and ``mandatory`` (a missing queue is an error, not
    a silent drop), carry ``correlation_id`` = request id, ``reply_to`` = this instance's
    reply queue and ``expiration`` = the milliseconds left until the request's deadline.

    Publishes (and their confirms) run one after another on the I/O thread, so under load a
    request may wait its turn: by default it waits up to its deadline (then 504), not a
    shorter ``publish_timeout_s`` (then 503) that a busy but healthy broker would trip.

    On a connection error the I/O thread reconnects with capped exponential backoff;
    meanwhile ``solve`` raises ``QueueUnavailable`` at once, and solves waiting on the lost
    connection fail with it too (their reply queue is gone with the connection). A
    channel error (e.g. a topology the broker refuses) is not retried: the adapter stays
    unavailable and ``ping`` says so.
    """

    def __init__(self, amqp_url: str, queue_name: str, instance_id: str, *, connect_timeout_s: float = 5.0,
                 publish_timeout_s: float | None = None, backoff_initial_s: float = 0.2, backoff_cap_s: float = 10.0,
                 delivery_limit: int = 3, max_length: int = 100_000) -> None:  # fmt: skip
        self.amqp_url = amqp_url
        self.topology = QueueTopology(queue_name, delivery_limit=delivery_limit, max_length=max_length)
        self.instance_id = instance_id
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self._params = connection_parameters(amqp_url, connect_timeout_s)
        self._backoff = Backoff(backoff_initial_s, backoff_cap_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._link: _Link | None = None  # set while connected
        self._fatal: str | None = None
        self._generation = 0
        self._calls: dict[str, list[_Call]] = {}  # request id -> solves waiting (event loop only)
        self._answered = RepliedIds()  # request ids answered recently (event loop only): duplicates
        self._counters = _Counters()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the I/O thread and wait (up to ``connect_timeout_s``) for its first connection attempt.

        Never raises for an unreachable broker: it keeps trying, and ``ping`` tells.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._first_attempt.clear()
        self._fatal = None
        self._thread = threading.Thread(target=self._io_main, name=f"amqp-{self.topology.name}", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._first_attempt.wait, self.connect_timeout_s + 1.0)
        if self._link is None:
            log.warning("RabbitMQ at %s not reachable yet (%s); retrying in the background",
                        redact(self.amqp_url), self._fatal or self._counters.last_error)  # fmt: skip

    async def stop(self) -> None:
        self._stop.set()
        link = self._link
        if link is not None:
            with contextlib.suppress(AMQPError):
                link.connection.add_callback_threadsafe(lambda: None)  # wake the I/O thread now
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None
        self._fail_calls(QueueUnavailable("the queue was stopped"), None)

    async def ping(self) -> bool:
        return self._link is not None and self._fatal is None

    @property
    def reply_queue(self) -> str | None:
        """This instance's reply queue on the current connection (None while disconnected)."""
        link = self._link
        return link.reply_queue if link is not None else None

    def stats(self) -> dict[str, Any]:
        c = self._counters
        waiting = sum(len(v) for v in list(self._calls.values()))
        return {
            "adapter": "rabbitmq", "broker": redact(self.amqp_url), "queue": self.topology.name,
            "queue_kind": c.queue_kind, "connected": self._link is not None, "fatal": self._fatal,
            # queue_depth: this instance's requests awaiting a reply (the broker's own depth is RabbitMQ's metric).
            "queue_depth": waiting, "waiting": waiting, "published": c.published, "replies": c.replies,
            "unexpected_replies": c.unexpected_replies, "duplicate_replies": c.duplicate_replies,
            "bad_replies": c.bad_replies,
            "rejected_full": c.rejected_full, "unavailable": c.unavailable,
            "deadline_exceeded": c.deadline_exceeded, "connects": c.connects,
            "connection_errors": c.connection_errors, "last_error": c.last_error,
        }  # fmt: skip

    # -- solving (event loop) ----------------------------------------------------------

    async def solve(self, request: SolveRequest) -> SolveReply:
        loop = asyncio.get_running_loop()
        if self._fatal is not None:
            self._counters.unavailable += 1
            raise QueueUnavailable(f"request queue unusable: {self._fatal}")
        link = self._link
        if link is None or self._stop.is_set():
            self._counters.unavailable += 1
            raise QueueUnavailable(f"RabbitMQ at {redact(self.amqp_url)} is not reachable")
        if request.deadline <= time.time():
            self._counters.deadline_exceeded += 1
            raise DeadlineExceeded(f"request {request.request_id}: deadline passed before it was queued")
        request = replace(request, enqueued_at=time.time())
        call = _Call(request.request_id, link.generation, loop.create_future(), loop.create_future())
        self._calls.setdefault(request.request_id, []).append(call)
        try:
            try:
                link.connection.add_callback_threadsafe(functools.partial(self._publish, link, request, call))
            except AMQPError as exc:  # the connection closed under us
                raise QueueUnavailable(f"RabbitMQ connection lost: {exc!r}") from None
            left_s = request.deadline - time.time()
            try:
                await asyncio.wait_for(asyncio.shield(call.confirmed),
                                       left_s if self.publish_timeout_s is None else min(self.publish_timeout_s, left_s))  # fmt: skip
            except TimeoutError:
                if request.deadline <= time.time():
                    raise DeadlineExceeded(f"request {request.request_id}: deadline passed while publishing") from None
                raise QueueUnavailable(f"no publisher confirm within {self.publish_timeout_s} s") from None
            try:
                reply = await asyncio.wait_for(asyncio.shield(call.reply), request.deadline - time.time())
            except TimeoutError:
                raise DeadlineExceeded(f"request {request.request_id}: deadline passed before its reply") from None
            self._counters.replies += 1
            return reply
        except DeadlineExceeded:
            self._counters.deadline_exceeded += 1
            raise
        except QueueFull:
            self._counters.rejected_full += 1
            raise
        except QueueUnavailable:
            self._counters.unavailable += 1
            raise
        finally:
            waiting = self._calls.get(request.request_id, [])
            if call in waiting:
                waiting.remove(call)
            if not waiting:
                self._calls.pop(request.request_id, None)
            for fut in (call.confirmed, call.reply):
                if fut.done() and not fut.cancelled():
                    fut.exception()  # retrieved: a failure nobody awaited is not logged as "never retrieved"
                fut.cancel()  # no-op when done

    def _on_reply_in_loop(self, correlation_id: str, reply: SolveReply) -> None:
        calls = self._calls.get(correlation_id)
        if not calls:
            # The caller gave up (deadline) or this is a second reply to a redelivered request:
            # a request is answered once, with the first reply.
            self._counters.unexpected_replies += 1
            if correlation_id in self._answered:
                self._counters.duplicate_replies += 1
            log.debug("reply for %s that nobody waits for; ignored", correlation_id)
            return
        self._answered.add(correlation_id)
        for call in calls:
            if not call.reply.done():
                call.reply.set_result(reply)

    def _fail_calls(self, exc: Exception, generation: int | None) -> None:
        """Fail the solves published on connection ``generation`` (or older; all when None)."""
        for calls in self._calls.values():
            for call in calls:
                if generation is None or call.generation <= generation:
                    for fut in (call.confirmed, call.reply):
                        if not fut.done():
                            fut.set_exception(exc)

    # -- the I/O thread ----------------------------------------------------------------

    def _to_loop(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)

    def _settle(self, fut: asyncio.Future[Any], exc: BaseException | None) -> None:
        def settle() -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        self._to_loop(settle)

    def _io_main(self) -> None:
        while not self._stop.is_set():
            connection: BlockingConnection | None = None
            try:
                connection = BlockingConnection(self._params)
                channel, kind = declare_topology(connection, self.topology)
                channel.confirm_delivery()
                reply_name = f"{self.topology.name}.reply.{self.instance_id}.{uuid.uuid4().hex[:8]}"
                channel.queue_declare(reply_name, exclusive=True, auto_delete=True)
                channel.basic_consume(reply_name, self._on_reply, auto_ack=True)
                self._generation += 1
                self._counters.queue_kind = kind
                self._counters.connects += 1
                self._link = _Link(connection, channel, reply_name, self._generation)
                self._first_attempt.set()
                self._backoff.reset()
                log.info("connected to RabbitMQ at %s (%s queue %s)", redact(self.amqp_url), kind, self.topology.name)
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.25)
            except (AMQPConnectionError, _TopologyLost) as exc:
                self._counters.connection_errors += 1
                self._counters.last_error = repr(exc)
                log.warning("RabbitMQ connection to %s failed: %r", redact(self.amqp_url), exc)
            except AMQPChannelError as exc:
                self._fatal = f"channel error: {exc!r}"
                log.error("RabbitMQ channel error on %s, not retrying: %r", self.topology.name, exc)
            except Exception as exc:
                self._fatal = f"unexpected error: {exc!r}"
                log.exception("RabbitMQ I/O thread failed")
            finally:
                self._link = None
                self._to_loop(self._fail_calls, QueueUnavailable("the RabbitMQ connection was lost"), self._generation)
                self._first_attempt.set()
                if connection is not None and connection.is_open:
                    try:
                        connection.close()
                    except Exception:
                        log.debug("closing the RabbitMQ connection failed", exc_info=True)
            if self._fatal is not None:
                return
            self._stop.wait(self._backoff.next_delay())

    def _publish(self, link: _Link, request: SolveRequest, call: _Call) -> None:
        """Runs on the I/O thread: publish one request and wait for the broker's confirm."""
        if link is not self._link:
            self._settle(call.confirmed, QueueUnavailable("the RabbitMQ connection was lost"))
            return
        left_ms = int((request.deadline - time.time()) * 1e3)
        if left_ms <= 0:
            self._settle(call.confirmed, DeadlineExceeded(f"request {request.request_id}: deadline passed"))
            return
        props = BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            correlation_id=request.request_id, message_id=request.request_id, reply_to=link.reply_queue,
            expiration=str(left_ms), timestamp=int(time.time()), app_id=self.instance_id,
        )  # fmt: skip
        try:
            link.channel.basic_publish("", self.topology.name, request.to_bytes(), props, mandatory=True)
        except UnroutableError:
            self._settle(call.confirmed, QueueUnavailable(f"queue {self.topology.name} does not exist"))
            raise _TopologyLost(f"queue {self.topology.name} vanished") from None  # reconnect declares it again
        except NackError:
            self._settle(call.confirmed, QueueFull(f"queue {self.topology.name} is full (the broker refused)"))
        except AMQPError as exc:
            self._settle(call.confirmed, QueueUnavailable(f"publishing failed: {exc!r}"))
            raise  # connection or channel trouble: the I/O loop decides
        else:
            self._counters.published += 1
            self._settle(call.confirmed, None)

    def _on_reply(self, _ch: BlockingChannel, _method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
        try:
            reply = SolveReply.from_bytes(body)
        except MessageError as exc:
            self._counters.bad_replies += 1
            log.warning("undecodable reply (correlation id %s) ignored: %s", props.correlation_id, exc)
            return
        self._to_loop(self._on_reply_in_loop, props.correlation_id or reply.request_id, reply)
