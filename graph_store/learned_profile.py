"""A learned travel-time profile in force: an ONNX model that gives every directed edge a time
multiplier (p10, p50, p90) at a moment of the week, over the base model's edge times.

The model has its map's edge inputs baked in; one call is one batched inference over all edges
for one 15-minute bucket of the week, kept for the life of the profile (a profile is immutable:
a new one is a new version and a new traffic epoch). Local time: the profile's ``timezone``
turns a departure time with an offset into the city's clock; a naive time is taken as local.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

BUCKET_MINUTES = 15
BUCKETS_PER_WEEK = 7 * 24 * 60 // BUCKET_MINUTES


def week_bucket(when: datetime, tz: ZoneInfo | None) -> int:
    """15-minute bucket of the week (0 = Monday 00:00-00:15) of ``when`` on the profile's clock."""
    if tz is not None and when.tzinfo is not None:
        when = when.astimezone(tz)
    return (when.weekday() * 24 * 60 + when.hour * 60 + when.minute) // BUCKET_MINUTES


@dataclass
class LearnedProfile:
    """``version`` names it everywhere (responses, cache keys, the request log)."""

    version: str
    onnx_model: bytes
    edge_count: int
    timezone: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _session: Any = field(default=None, init=False, repr=False)
    _buckets: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(self.onnx_model, opts, providers=["CPUExecutionProvider"])
        self._tz = ZoneInfo(self.timezone) if self.timezone else None
        probe = self.run(np.asarray([7.5], dtype=np.float32))
        if probe.shape != (1, self.edge_count, 3):
            raise ValueError(
                f"learned profile {self.version} gives {probe.shape[1]} edges, the map has {self.edge_count}"
            )

    def run(self, minutes: np.ndarray) -> np.ndarray:
        """Multipliers [T, E, 3] at T minutes of the week."""
        out = self._session.run(None, {"minutes": np.asarray(minutes, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float64)

    def bucket_of(self, when: datetime) -> int:
        return week_bucket(when, self._tz)

    def multipliers(self, when: datetime) -> np.ndarray:
        """[E, 3] multipliers (p10, p50, p90) in ``when``'s bucket; computed once per bucket."""
        b = self.bucket_of(when)
        hit = self._buckets.get(b)
        if hit is not None:
            return hit
        out = self.run(np.asarray([b * BUCKET_MINUTES + BUCKET_MINUTES / 2.0]))[0]
        with self._lock:
            self._buckets[b] = out
        return out
