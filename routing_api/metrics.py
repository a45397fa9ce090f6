"""Prometheus metrics of one API process (own registry: several apps can live in one test process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAYERS = ("ingest", "queue_wait", "inference", "search", "post")


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "routing_request_seconds", "Route request latency, seconds", ["endpoint"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.layer_latency = Histogram(
            "routing_layer_seconds", "Time per layer of a route request, seconds", ["layer"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.cache = Counter("routing_cache_total", "Route cache lookups", ["result"], registry=r)
        self.batch_size = Histogram(
            "routing_batch_size", "Problems per model batch (as reported with each answer)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r,
        )  # fmt: skip
        self.errors = Counter("routing_errors_total", "Failed requests by kind", ["kind"], registry=r)
        self.requests = Counter("routing_requests_total", "Route requests by HTTP status", ["status"], registry=r)
        self.in_flight = Gauge("routing_in_flight_requests", "Route requests being served", registry=r)
        self.queue_depth = Gauge("routing_queue_depth", "Requests waiting for a batch", registry=r)
        self.model_fallbacks = Counter(
            "routing_model_fallbacks_total", "Routes answered by the plain k-nearest search because the model failed",
            registry=r,
        )  # fmt: skip
        self.backend_info = Gauge("routing_model_info", "Model backend in use (value 1)", ["backend", "model"],
                                  registry=r)  # fmt: skip

    def set_backend(self, backend: str, model: str) -> None:
        self.backend_info.clear()
        self.backend_info.labels(backend=backend, model=model).set(1)

    def bind_queue_depth(self, fn: Callable[[], float]) -> None:
        self.queue_depth.set_function(fn)

    def bind_persistence(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the request-log buffer's counters (``RequestLog.stats``) as ``routing_persist_*``."""
        self.registry.register(_StatsCollector(stats, [
            ("counter", "routing_persist_failures_total", "failures",
             "Request-log/position write attempts that found the database unreachable (rows kept, retried)"),
            ("counter", "routing_persist_dropped_total", "dropped", "Queued rows dropped because the buffer was full"),
            ("counter", "routing_persist_rejected_total", "rejected", "Rows the database refused (dropped)"),
            ("counter", "routing_persist_written_total", "written", "Rows written to the database"),
            ("gauge", "routing_persist_buffered", "buffered", "Rows waiting to be written"),
        ]))  # fmt: skip

    def bind_queue_replies(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the queue adapter's reply counters (RabbitMQ only) as ``routing_queue_*``."""
        self.registry.register(_StatsCollector(stats, [
            ("counter", "routing_queue_duplicate_replies_total", "duplicate_replies",
             "Second replies for a request answered already (redelivery): ignored"),
            ("counter", "routing_queue_unexpected_replies_total", "unexpected_replies",
             "Replies nobody waited for (late or duplicate): ignored"),
        ]))  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatsCollector(Collector):
    """Prometheus metrics read from a component's ``stats()`` dict at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, Any]], specs: list[tuple[str, str, str, str]]) -> None:
        self._stats = stats
        self._specs = specs  # (kind, metric name, stats key, help)

    def collect(self) -> Iterator[Metric]:
        values = self._stats()
        for kind, name, key, text in self._specs:
            if key not in values:
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, text, value=float(values[key]))
