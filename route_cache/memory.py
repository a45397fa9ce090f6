"""The in-memory route cache: one process, least-recently-used eviction, per-entry expiry.

The adapter of the embedded (monolith) deployment and of unit tests. Its locks are real
(with expiry), so single-flight runs the same code path as on Redis; they only
coordinate callers of this one instance.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from route_cache.port import CachePolicy, RouteCache


class InMemoryRouteCache(RouteCache):
    """An LRU cache of at most ``max_entries`` values, each with its own expiry.

    ``clock`` returns seconds on a monotonic scale (default ``time.monotonic``); tests
    pass their own to move time without sleeping. An expired entry is dropped when it
    is next looked up, or evicted as the least recently used.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        policy: CachePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        super().__init__(policy=policy, rng=rng)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, expires_at)
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (token, expires_at)

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        with self._lock:
            return len(self._entries)

    def _backend_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, expires_at = entry
            if self._clock() >= expires_at:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def _backend_set(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._entries[key] = (value, self._clock() + ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _backend_try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        with self._lock:
            if self._live_lock_owner(key) is not None:
                return False
            self._locks[key] = (token, self._clock() + ttl_s)
            return True

    def _backend_lock_owner(self, key: str) -> str | None:
        with self._lock:
            return self._live_lock_owner(key)

    def _backend_unlock(self, key: str, token: str) -> bool:
        with self._lock:
            if self._live_lock_owner(key) != token:
                return False
            del self._locks[key]
            return True

    def _backend_flush(self) -> int:
        with self._lock:
            removed = len(self._entries) + len(self._locks)
            self._entries.clear()
            self._locks.clear()
            return removed

    def _backend_ping(self) -> None:
        return None

    def _live_lock_owner(self, key: str) -> str | None:
        """The token of the unexpired lock of ``key`` (caller holds ``self._lock``)."""
        held = self._locks.get(key)
        if held is None:
            return None
        token, expires_at = held
        if self._clock() >= expires_at:
            del self._locks[key]
            return None
        return token
