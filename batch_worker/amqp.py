"""RabbitMQ pieces both sides share: the queue topology, connection parameters, reconnect backoff.

Topology of a request queue ``NAME`` (declared, idempotently, by the API side and by
every worker, so whichever starts first creates it):

* ``NAME``: durable quorum queue (``x-queue-type: quorum``) with ``x-delivery-limit``
  (a message delivered that many times without an ack is dead-lettered) and
  ``x-max-length`` + ``x-overflow: reject-publish`` (a full queue nacks the publish:
  the API answers 503). A broker that refuses the quorum queue gets a classic durable
  one with the same dead-lettering (no delivery limit); a queue that already exists
  with other arguments is used as it is (passive declare), with a warning.
* ``NAME.dlx``: direct exchange; ``NAME.dlq``: durable queue bound to it. Messages
  rejected without requeue (undecodable), over the delivery limit, or expired (their
  per-message TTL is the request's deadline) land there. It keeps at most
  ``dlq_max_length`` messages (the oldest go first), so expired requests cannot grow it
  for ever.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "routing.solve"
REPLIED_TTL_S = 300.0  # how long a request id is remembered as answered
REPLIED_MAX = 50_000  # most request ids remembered (the oldest are forgotten first)


@dataclass(frozen=True)
class QueueTopology:
    """Names and limits of one request queue and its dead-letter queue."""

    name: str
    delivery_limit: int = 3
    max_length: int = 100_000  # requests waiting in the broker before publishes are refused
    dlq_max_length: int = 100_000

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > 200:
            raise ValueError(f"queue name must be 1..200 bytes, got {self.name!r}")
        if self.delivery_limit < 1:
            raise ValueError(f"delivery_limit must be >= 1, got {self.delivery_limit}")
        if self.max_length < 1 or self.dlq_max_length < 1:
            raise ValueError("max_length and dlq_max_length must be >= 1")

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.name}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    def _dead_lettering(self) -> dict[str, Any]:
        return {"x-dead-letter-exchange": self.dead_letter_exchange, "x-dead-letter-routing-key": self.name,
                "x-max-length": self.max_length, "x-overflow": "reject-publish"}  # fmt: skip

    def quorum_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit, **self._dead_lettering()}

    def classic_arguments(self) -> dict[str, Any]:
        return self._dead_lettering()  # no x-queue-type: a broker too old for quorum queues may not know it


def declare_topology(connection: BlockingConnection, topology: QueueTopology) -> tuple[BlockingChannel, str]:
    """Declare the dead-letter exchange and queue and the request queue.

    Returns an open channel (a refused declare closes its channel, so it may be a new
    one) and the request queue's kind: ``quorum``, ``classic`` or ``existing``. A queue
    that neither exists nor can be declared raises ``ChannelClosedByBroker``.
    """
    channel = connection.channel()
    channel.exchange_declare(topology.dead_letter_exchange, exchange_type="direct", durable=True)
    channel, _ = _declare_queue(connection, channel, topology.dead_letter_queue,
                                [("classic", {"x-max-length": topology.dlq_max_length})])  # fmt: skip
    channel.queue_bind(topology.dead_letter_queue, topology.dead_letter_exchange, routing_key=topology.name)
    channel, kind = _declare_queue(connection, channel, topology.name,
                                   [("quorum", topology.quorum_arguments()),
                                    ("classic", topology.classic_arguments())])  # fmt: skip
    return channel, kind


def _declare_queue(connection: BlockingConnection, channel: BlockingChannel, name: str,
                   variants: list[tuple[str, dict[str, Any]]]) -> tuple[BlockingChannel, str]:  # fmt: skip
    for kind, arguments in variants:
        try:
            channel.queue_declare(name, durable=True, arguments=arguments)
            return channel, kind
        except ChannelClosedByBroker as exc:
            log.warning("broker refused %s queue %s (%s %s); trying the next kind", kind, name,
                        exc.reply_code, exc.reply_text)  # fmt: skip
            channel = connection.channel()
    # Exists with other arguments (declared by an older release, or by hand): use it as it is.
    channel.queue_declare(name, passive=True)
    log.warning("queue %s exists with other arguments than ours; using it as it is", name)
    return channel, "existing"


def connection_parameters(amqp_url: str, connect_timeout_s: float = 5.0) -> pika.URLParameters:
    """Parameters for ``amqp_url``: one attempt per connect (we retry ourselves), bounded timeouts.

    Values given in the URL's query (``heartbeat``, ``blocked_connection_timeout``, ...) win.
    """
    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    query = amqp_url.partition("?")[2]
    if "socket_timeout" not in query:
        params.socket_timeout = connect_timeout_s
    if "stack_timeout" not in query:
        params.stack_timeout = connect_timeout_s
    if "blocked_connection_timeout" not in query:
        params.blocked_connection_timeout = 30.0
    if "heartbeat" not in query:
        params.heartbeat = 30
    if "client_properties" not in query:
        params.client_properties = {"connection_name": "routing batch_worker"}
    return params


def redact(amqp_url: str) -> str:
    """The URL without its password, for logs and messages."""
    scheme, sep, rest = amqp_url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return amqp_url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class Backoff:
    """Exponential reconnect delays with full jitter: ``initial_s`` doubling up to ``cap_s``."""

    def __init__(self, initial_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"backoff needs 0 < initial_s <= cap_s, got {initial_s}, {cap_s}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (half fixed, half random, so replicas spread out)."""
        ceiling = min(self.cap_s, self.initial_s * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 60)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


class RepliedIds:
    """Request ids answered in the last ``ttl_s`` seconds, at most ``max_ids`` (oldest forgotten first).

    Recognises duplicates that redelivery makes (see ``batch_worker.worker``). Used from one
    thread only; not thread-safe.
    """

    def __init__(self, ttl_s: float = REPLIED_TTL_S, max_ids: int = REPLIED_MAX) -> None:
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._ids: collections.OrderedDict[str, float] = collections.OrderedDict()

    def add(self, request_id: str) -> None:
        now = time.monotonic()
        self._ids[request_id] = now
        self._ids.move_to_end(request_id)
        self._expire(now)

    def __contains__(self, request_id: object) -> bool:
        self._expire(time.monotonic())
        return request_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def _expire(self, now: float) -> None:
        while self._ids:
            oldest, at = next(iter(self._ids.items()))
            if len(self._ids) <= self.max_ids and now - at < self.ttl_s:
                return
            del self._ids[oldest]
