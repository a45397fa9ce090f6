"""Traffic: time-of-day speed profiles and live speed observations.

What is time-dependent, and what is not:

* A query's travel times use the speeds in force at its **departure time**: the
  profile bucket (15 minutes, weekday or weekend) of that instant, and the live
  observations that have not expired by then. The whole query is costed in that one
  bucket; speeds do not change along the route while it is being driven (no
  time-expanded search). For city-sized trips (minutes to an hour) this is the usual
  trade-off of production routers with live traffic.
* Buckets are taken from the departure time's own clock: ``08:30-05:00`` is in the
  08:30 bucket. A time without an offset is read as given.
* Lengths, geometry and the graph itself are static; only edge speeds change.

A profile gives a speed factor (multiplier of the free-flow speed, > 0) per road class
or per edge, per (day type, bucket). A live observation sets an edge's speed in km/h
until it expires; it wins over the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from graph_store.learned_profile import LearnedProfile

BUCKETS_PER_DAY = 96
BUCKET_MINUTES = 15


class DayType(IntEnum):
    WEEKDAY = 0
    WEEKEND = 1

    @classmethod
    def parse(cls, value: str) -> DayType:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"day_type must be 'weekday' or 'weekend', got {value!r}") from None


def bucket_of(when: datetime) -> tuple[DayType, int]:
    """(day type, 15-minute bucket 0..95) of a departure time, on its own clock."""
    day = DayType.WEEKEND if when.weekday() >= 5 else DayType.WEEKDAY
    return day, (when.hour * 60 + when.minute) // BUCKET_MINUTES


@dataclass(frozen=True)
class ProfileEntry:
    """One profile value: ``road_class`` or ``edge`` (exactly one) at (day type, bucket)."""

    day_type: DayType
    bucket: int
    speed_factor: float
    road_class: str | None = None
    edge: int | None = None

    def __post_init__(self) -> None:
        if (self.road_class is None) == (self.edge is None):
            raise ValueError("a profile entry names exactly one of road_class or edge")
        if not 0 <= self.bucket < BUCKETS_PER_DAY:
            raise ValueError(f"bucket must be in 0..{BUCKETS_PER_DAY - 1}, got {self.bucket}")
        if not (0.01 <= self.speed_factor <= 10.0):
            raise ValueError(f"speed_factor must be in 0.01..10, got {self.speed_factor}")


@dataclass(frozen=True)
class LiveObservation:
    """A measured speed (km/h) on one directed edge, valid until ``expires_at``."""

    edge: int
    speed_kph: float
    observed_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if not (0.5 <= self.speed_kph <= 200.0):
            raise ValueError(f"speed_kph must be in 0.5..200, got {self.speed_kph}")
        if self.expires_at <= self.observed_at:
            raise ValueError("expires_at must be after observed_at")


def _ts(when: datetime) -> float:
    """Seconds since the Unix epoch; a naive time is read as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True)
class TrafficState:
    """Immutable traffic at one epoch: profiles and live observations."""

    epoch: int = 0
    profile: tuple[ProfileEntry, ...] = ()
    live: tuple[LiveObservation, ...] = ()
    learned: LearnedProfile | None = field(default=None, compare=False)
    _live_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Later observations of the same edge win: keep insertion order, last wins.
        edges = np.asarray([o.edge for o in self.live], dtype=np.int64)
        speeds = np.asarray([o.speed_kph for o in self.live], dtype=np.float64)
        expires = np.asarray([_ts(o.expires_at) for o in self.live], dtype=np.float64)
        object.__setattr__(self, "_live_arrays", (edges, speeds, expires))

    def active_live(self, when: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(edges, speeds) of the observations still valid at ``when``."""
        edges, speeds, expires = self._live_arrays
        mask = expires > _ts(when)
        return edges[mask], speeds[mask]

    def weight_key(self, when: datetime) -> tuple[object, ...]:
        """A key equal for two departure times exactly when their edge speeds are equal."""
        day, bucket = bucket_of(when)
        edges, _ = self.active_live(when)
        has_profile = any(p.day_type == day and p.bucket == bucket for p in self.profile)
        learned = -1 if self.learned is None else self.learned.bucket_of(when)
        return (int(day), bucket if has_profile else -1, edges.tobytes(), learned)

    @property
    def learned_version(self) -> str | None:
        return None if self.learned is None else self.learned.version

    def edge_speeds(self, free_flow_kph: np.ndarray, road_class: np.ndarray, when: datetime) -> np.ndarray:
        """Speed in km/h of every edge at departure time ``when``."""
        day, bucket = bucket_of(when)
        speeds = free_flow_kph.astype(np.float64).copy()
        class_entries = [p for p in self.profile if p.day_type == day and p.bucket == bucket and p.road_class]
        for p in class_entries:
            speeds[road_class == p.road_class] = free_flow_kph[road_class == p.road_class] * p.speed_factor
        for p in self.profile:
            if p.day_type == day and p.bucket == bucket and p.edge is not None and p.edge < speeds.size:
                speeds[p.edge] = free_flow_kph[p.edge] * p.speed_factor
        edges, live_speeds = self.active_live(when)
        if edges.size:
            valid = edges < speeds.size
            speeds[edges[valid]] = live_speeds[valid]
        return speeds
