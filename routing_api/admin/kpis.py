"""Live KPIs of one API process, computed the way Prometheus' ``rate()`` and ``histogram_quantile()``
do: cumulative counters are sampled every few seconds and a window's figure is the difference
between two samples. No call site changes: it reads the metrics the request path already keeps.

Latency quantiles are estimated from histogram buckets (linear within a bucket), so they are as
precise as the bucket bounds (``routing_api.metrics.LATENCY_BUCKETS_S``), not exact.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from routing_api.metrics import ServiceMetrics

SAMPLE_INTERVAL_S = 2.0
HISTORY_S = 900.0


@dataclass(frozen=True)
class MetricsSample:
    """Cumulative counters at one instant (``t``: monotonic seconds)."""

    t: float
    requests: float  # route requests answered, any status
    errors: float  # route requests answered with a status other than 200
    bounds: tuple[float, ...]  # latency bucket upper bounds, seconds, ending with +inf
    buckets: tuple[float, ...]  # cumulative request counts per bound
    cache_hits: float
    cache_misses: float
    batch_sum: float  # problems in the batches reported with answers
    batch_count: float  # answers that reported a batch (cache misses)


def take_sample(metrics: ServiceMetrics, t: float) -> MetricsSample:
    """Read the counters of ``metrics`` (every endpoint label summed)."""
    requests = errors = hits = misses = batch_sum = batch_count = 0.0
    buckets: dict[float, float] = {}
    for family in metrics.requests.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                requests += s.value
                if s.labels.get("status") != "200":
                    errors += s.value
    for family in metrics.request_latency.collect():
        for s in family.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    for family in metrics.cache.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                if s.labels.get("result") == "hit":
                    hits += s.value
                elif s.labels.get("result") == "miss":
                    misses += s.value
    for family in metrics.batch_size.collect():
        for s in family.samples:
            if s.name.endswith("_sum"):
                batch_sum += s.value
            elif s.name.endswith("_count"):
                batch_count += s.value
    bounds = tuple(sorted(buckets))
    return MetricsSample(t, requests, errors, bounds, tuple(buckets[b] for b in bounds), hits, misses, batch_sum,
                         batch_count)  # fmt: skip


def histogram_quantile(q: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> float | None:
    """The ``q`` quantile (0..1) of observations given cumulative ``counts`` per upper bound; None when empty.

    Linear interpolation inside the bucket holding the rank; in the +inf bucket, the largest finite bound.
    """
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = bisect.bisect_left(counts, rank)
    i = min(i, len(counts) - 1)
    upper = bounds[i]
    lower = bounds[i - 1] if i > 0 else 0.0
    if math.isinf(upper):
        return lower
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


def _delta(new: MetricsSample, old: MetricsSample | None) -> dict[str, Any]:
    """The figures of the interval between two samples (from process start when ``old`` is None)."""
    span = new.t - old.t if old is not None else 0.0
    req = new.requests - (old.requests if old else 0.0)
    err = new.errors - (old.errors if old else 0.0)
    # A bound missing from the older sample had no observations yet (its labelled series did not exist).
    before = dict(zip(old.bounds, old.buckets, strict=True)) if old else {}
    counts = tuple(c - before.get(b, 0.0) for b, c in zip(new.bounds, new.buckets, strict=True))
    hits = new.cache_hits - (old.cache_hits if old else 0.0)
    misses = new.cache_misses - (old.cache_misses if old else 0.0)
    bsum = new.batch_sum - (old.batch_sum if old else 0.0)
    bcount = new.batch_count - (old.batch_count if old else 0.0)
    p50 = histogram_quantile(0.5, new.bounds, counts)
    p99 = histogram_quantile(0.99, new.bounds, counts)
    return {
        "span_s": round(span, 3),
        "requests": round(req),
        "errors": round(err),
        "requests_per_s": round(req / span, 3) if span > 0 else None,
        "latency_p50_ms": None if p50 is None else round(p50 * 1e3, 2),
        "latency_p99_ms": None if p99 is None else round(p99 * 1e3, 2),
        "cache_lookups": round(hits + misses),
        "cache_hit_ratio": round(hits / (hits + misses), 4) if hits + misses > 0 else None,
        "batches_reported": round(bcount),
        "mean_batch_size": round(bsum / bcount, 3) if bcount > 0 else None,
    }


class KpiWindow:
    """Samples of one ``ServiceMetrics`` over the last ``HISTORY_S`` seconds."""

    def __init__(self, metrics: ServiceMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self._samples: deque[MetricsSample] = deque()
        self.sample()

    def sample(self) -> MetricsSample:
        s = take_sample(self.metrics, self.clock())
        self._samples.append(s)
        while len(self._samples) > 2 and self._samples[0].t < s.t - HISTORY_S:
            self._samples.popleft()
        return s

    async def run(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        """Sample forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            self.sample()

    def _at_or_before(self, t: float) -> MetricsSample | None:
        """The newest sample taken at or before ``t``."""
        times = [s.t for s in self._samples]
        i = bisect.bisect_right(times, t)
        return self._samples[i - 1] if i > 0 else None

    def summary(self, window_s: float = 60.0) -> dict[str, Any]:
        """The figures of the ``window_s`` seconds up to the latest sample (shorter while the process is younger)."""
        now = self._samples[-1]
        old = self._at_or_before(now.t - window_s) or self._samples[0]
        out = _delta(now, old if old is not now else None)
        out["window_s"] = window_s
        out["total_requests"] = int(now.requests)
        return out

    def series(self, step_s: float = 10.0, span_s: float = 600.0) -> list[dict[str, Any]]:
        """One point per ``step_s`` over the ``span_s`` up to the latest sample: ``t`` is seconds before it (<= 0)."""
        now = self._samples[-1].t
        points = []
        first = self._samples[0].t
        n = int(span_s // step_s)
        for k in range(n, 0, -1):
            end_t, start_t = now - (k - 1) * step_s, now - k * step_s
            if end_t < first:
                continue
            end = self._at_or_before(end_t)
            # The step in which sampling began starts at the first sample (taken before any request).
            start = self._at_or_before(start_t) or self._samples[0]
            if end is None or end is start:
                continue
            d = _delta(end, start)
            points.append({"t": -round((k - 1) * step_s), "requests_per_s": d["requests_per_s"],
                           "p50_ms": d["latency_p50_ms"], "p99_ms": d["latency_p99_ms"]})  # fmt: skip
        return points
