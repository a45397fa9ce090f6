"""The route cache port: what the API needs from a cache of computed routes.

Adapters implement a handful of raw backend operations (``_backend_*``: get, set,
lock, unlock, flush, ping). Everything a caller sees is written once here, on top of
them:

* ``get``/``set`` never raise on a backend failure: the failure is logged (at most
  once per ``CachePolicy.log_interval_s``), counted in ``stats()['errors']`` and
  treated as a miss (``get``) or ignored (``set``). A cache must never fail a request.
* ``get_or_compute``/``aget_or_compute`` add single-flight: identical concurrent
  misses compute once. In one process through a shared future per key; across
  processes through a lock entry in the backend (``SET lock token NX PX`` on Redis):
  the owner computes, stores the value, then deletes the lock only if it still holds
  its token; the others poll for the value until it appears, the lock disappears
  (they try to take it over) or ``lock_wait_s`` passes (they compute themselves).
* Stored TTLs carry jitter, ``ttl_s * uniform(1 - ttl_jitter, 1 + ttl_jitter)``, so
  entries written together do not all expire together.
* After a backend failure the backend is left alone for ``backend_retry_s`` seconds
  (operations count as ``bypassed`` and behave as failures without waiting for a
  timeout), so an unreachable server costs at most one timeout per period. ``ping()``
  always asks the backend, and a successful answer ends the pause. A lock owner still
  stores its value and releases its lock during a pause: other replicas wait on those.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

logger = logging.getLogger("route_cache")

CacheStatus = Literal["hit", "miss"]

T = TypeVar("T")

# The most a waiter sleeps between two looks at the backend, seconds.
_MAX_POLL_S: Final = 0.1


class RouteCacheUnavailable(Exception):
    """The backend could not carry out an admin operation (``flush``)."""


@dataclass(frozen=True)
class CachePolicy:
    """How a cache spreads expiries, coordinates identical misses and handles failures.

    Attributes:
        ttl_jitter: relative TTL jitter, in [0, 1): a value is kept for
            ``ttl_s * uniform(1 - ttl_jitter, 1 + ttl_jitter)`` seconds.
        lock_ttl_s: lifetime of a single-flight lock, seconds (> 0). A computation
            that runs longer loses its exclusivity (another process may start one),
            never its result.
        lock_wait_s: longest a caller waits for another process's computation before
            computing itself, seconds (>= 0); ``None`` means ``lock_ttl_s``.
        lock_poll_s: first pause between two looks at the backend while waiting,
            seconds (> 0); it doubles up to 0.1 s.
        backend_retry_s: after a backend failure, how long the backend is bypassed,
            seconds (>= 0; 0 = try it on every operation).
        log_interval_s: at most one warning per this many seconds about backend
            failures (>= 0); the rest are counted, not logged.
    """

    ttl_jitter: float = 0.1
    lock_ttl_s: float = 10.0
    lock_wait_s: float | None = None
    lock_poll_s: float = 0.005
    backend_retry_s: float = 1.0
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ttl_jitter < 1.0:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {self.ttl_jitter}")
        if not self.lock_ttl_s > 0.0:
            raise ValueError(f"lock_ttl_s must be > 0, got {self.lock_ttl_s}")
        if self.lock_wait_s is not None and not self.lock_wait_s >= 0.0:
            raise ValueError(f"lock_wait_s must be >= 0 or None, got {self.lock_wait_s}")
        if not self.lock_poll_s > 0.0:
            raise ValueError(f"lock_poll_s must be > 0, got {self.lock_poll_s}")
        if not self.backend_retry_s >= 0.0:
            raise ValueError(f"backend_retry_s must be >= 0, got {self.backend_retry_s}")
        if not self.log_interval_s >= 0.0:
            raise ValueError(f"log_interval_s must be >= 0, got {self.log_interval_s}")

    @property
    def effective_lock_wait_s(self) -> float:
        return self.lock_ttl_s if self.lock_wait_s is None else self.lock_wait_s


class _Failed:
    """Marks a backend operation that raised or was bypassed."""

    __slots__ = ()


_FAILED: Final = _Failed()


class _Outcome:
    """How waiting for another owner of the lock ended (besides finding the value)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_WON: Final = _Outcome("won")  # the lock turned out to be ours (a lost reply to our SET NX)
_LOCK_GONE: Final = _Outcome("lock_gone")  # released or expired without a value: try to take it
_GIVE_UP: Final = _Outcome("give_up")  # waited long enough, or the backend failed: compute ourselves

_STAT_NAMES: Final = ("hits", "misses", "errors", "sets", "coalesced", "bypassed")


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0.0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s}")


class RouteCache(abc.ABC):
    """A byte-value cache with expiry and single-flight computation of misses.

    Keys are strings (see ``route_cache.keys.route_cache_key``); values are opaque
    bytes. Thread-safe: the API calls it from worker threads and from its event loop.

    ``stats()`` counts, since construction:

    * ``hits``: ``get`` calls that found a value, and ``get_or_compute`` calls answered
      without computing (from the cache or from another caller's computation);
    * ``misses``: ``get`` calls that found nothing (a failed lookup included), and
      ``get_or_compute`` calls that computed;
    * ``errors``: backend operations that raised;
    * ``sets``: values stored;
    * ``coalesced``: ``get_or_compute`` calls answered by another caller's computation;
    * ``bypassed``: backend operations skipped during the pause after a failure.
    """

    # True when the backend does network I/O: the async methods then run its
    # operations in a worker thread instead of on the event loop.
    _blocking_backend: bool = False

    def __init__(self, *, policy: CachePolicy | None = None, rng: random.Random | None = None) -> None:
        self.policy = policy if policy is not None else CachePolicy()
        self._rng = rng if rng is not None else random.Random()
        self._stats_lock = threading.Lock()
        self._counts = dict.fromkeys(_STAT_NAMES, 0)
        self._flights_lock = threading.Lock()
        self._flights: dict[str, Future[bytes]] = {}
        self._async_flights: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[bytes]] = {}
        self._backend_down_until = 0.0
        self._last_warning_at = -float("inf")
        self._suppressed_warnings = 0

    # ---- what an adapter provides -------------------------------------------------

    @abc.abstractmethod
    def _backend_get(self, key: str) -> bytes | None:
        """The stored value, or None if absent or expired. May raise."""

    @abc.abstractmethod
    def _backend_set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds (already jittered). May raise."""

    @abc.abstractmethod
    def _backend_try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Create the lock of ``key`` holding ``token`` for ``ttl_s`` seconds unless it
        exists; True if created. May raise."""

    @abc.abstractmethod
    def _backend_lock_owner(self, key: str) -> str | None:
        """The token in the lock of ``key``, or None if there is none. May raise."""

    @abc.abstractmethod
    def _backend_unlock(self, key: str, token: str) -> bool:
        """Delete the lock of ``key`` if (atomically) it still holds ``token``; True if
        deleted. May raise."""

    @abc.abstractmethod
    def _backend_flush(self) -> int:
        """Delete everything this cache owns (values and locks); the number of entries
        deleted. May raise."""

    @abc.abstractmethod
    def _backend_ping(self) -> None:
        """Return if the backend answers, raise otherwise."""

    def close(self) -> None:  # noqa: B027 - optional hook: only adapters holding connections need it
        """Release connections. The cache must not be used afterwards."""

    # ---- the port -----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The cached value of ``key``, or None (absent, expired or backend failure)."""
        value = self._attempt("get", self._backend_get, key)
        if isinstance(value, bytes):
            self._count("hits")
            return value
        self._count("misses")
        return None

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` under ``key`` for about ``ttl_s`` seconds (> 0; jittered by
        ``policy.ttl_jitter``). A backend failure is counted and otherwise ignored."""
        _check_ttl(ttl_s)
        self._store(key, value, ttl_s)

    def flush(self) -> int:
        """Delete every entry this cache owns (and nothing else); the number deleted.

        The admin action: unlike the rest of the port it reports a backend failure,
        by raising ``RouteCacheUnavailable``.
        """
        try:
            return self._backend_flush()
        except Exception as exc:
            self._note_failure("flush", exc)
            raise RouteCacheUnavailable(f"route cache flush failed: {type(exc).__name__}: {exc}") from exc

    def ping(self) -> bool:
        """Whether the backend answers now (always asked, even during a pause)."""
        try:
            self._backend_ping()
        except Exception as exc:
            self._note_failure("ping", exc)
            return False
        self._backend_down_until = 0.0
        return True

    def stats(self) -> dict[str, int]:
        """Counters since construction; see the class docstring."""
        with self._stats_lock:
            return dict(self._counts)

    def get_or_compute(self, key: str, compute: Callable[[], bytes], ttl_s: float) -> tuple[bytes, CacheStatus]:
        """The value of ``key``: cached, or made by ``compute()`` and stored for about
        ``ttl_s`` seconds. Returns it with "hit" (not computed by this call) or "miss".

        Concurrent calls for the same key compute once: in this process the others wait
        for the first one's result (and raise its exception if it raises); across
        processes see the module docstring. Backend failures never raise from here.
        """
        _check_ttl(ttl_s)
        cached = self._attempt("get", self._backend_get, key)
        if isinstance(cached, bytes):
            self._count("hits")
            return cached, "hit"
        with self._flights_lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if not leading:
            value = flight.result()
            self._count("hits", "coalesced")
            return value, "hit"
        try:
            value, status = self._compute_under_lock(key, compute, ttl_s)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(value)
        finally:
            with self._flights_lock:
                del self._flights[key]
        self._count_outcome(status)
        return value, status

    async def aget_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        ttl_s: float,
        *,
        store_if: Callable[[bytes], bool] | None = None,
    ) -> tuple[bytes, CacheStatus]:
        """``get_or_compute`` for asyncio callers: ``compute`` is awaited.

        Identical concurrent calls on one event loop compute once; across processes the
        same lock as ``get_or_compute`` applies. A caller cancelled while computing
        lets a waiting caller take over instead of cancelling it too. ``store_if``, when
        given, decides whether a computed value is stored (e.g. not a degraded answer); a
        value not stored is still handed to the callers waiting for this computation.
        """
        _check_ttl(ttl_s)
        cached = await self._aattempt("get", self._backend_get, key)
        if isinstance(cached, bytes):
            self._count("hits")
            return cached, "hit"
        loop = asyncio.get_running_loop()
        flight_key = (loop, key)
        while True:
            with self._flights_lock:
                flight = self._async_flights.get(flight_key)
                leading = flight is None
                if flight is None:
                    flight = self._async_flights[flight_key] = loop.create_future()
            if leading:
                break
            try:
                # shield: a waiter being cancelled must not cancel the leader's future.
                value = await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    continue  # the leader was cancelled, not us: take its place
                raise
            self._count("hits", "coalesced")
            return value, "hit"
        try:
            value, status = await self._acompute_under_lock(key, compute, ttl_s, store_if)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            flight.set_result(value)
        finally:
            with self._flights_lock:
                del self._async_flights[flight_key]
        self._count_outcome(status)
        return value, status

    # ---- single-flight across processes -----------------------------------------

    def _compute_under_lock(self, key: str, compute: Callable[[], bytes], ttl_s: float) -> tuple[bytes, CacheStatus]:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.policy.effective_lock_wait_s
        while True:
            locked = self._attempt("lock", self._backend_try_lock, key, token, self.policy.lock_ttl_s)
            if locked is False:
                outcome = self._wait_for_owner(key, token, deadline)
                if isinstance(outcome, bytes):
                    self._count("coalesced")
                    return outcome, "hit"
                if outcome is _LOCK_GONE:
                    continue
                locked = outcome is _WON
            owned = locked is True  # False after giving up, _FAILED if the backend failed
            try:
                if owned:
                    # Another process may have stored the value between our lookup and our lock.
                    cached = self._attempt("get", self._backend_get, key)
                    if isinstance(cached, bytes):
                        return cached, "hit"
                value = compute()
                # A lock owner stores and unlocks even during a pause after a failure:
                # other replicas are waiting on exactly these two operations.
                self._store(key, value, ttl_s, even_if_paused=owned)
                return value, "miss"
            finally:
                if owned:
                    self._attempt("unlock", self._backend_unlock, key, token, even_if_paused=True)

    def _wait_for_owner(self, key: str, token: str, deadline: float) -> bytes | _Outcome:
        pause = self.policy.lock_poll_s
        while True:
            time.sleep(pause)
            pause = min(2 * pause, _MAX_POLL_S)
            value = self._attempt("get", self._backend_get, key)
            if isinstance(value, bytes):
                return value
            owner = self._attempt("lock owner", self._backend_lock_owner, key)
            outcome = self._after_poll(owner, token, deadline)
            if outcome is not None:
                return outcome

    async def _acompute_under_lock(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        ttl_s: float,
        store_if: Callable[[bytes], bool] | None = None,
    ) -> tuple[bytes, CacheStatus]:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.policy.effective_lock_wait_s
        while True:
            locked = await self._aattempt("lock", self._backend_try_lock, key, token, self.policy.lock_ttl_s)
            if locked is False:
                outcome = await self._await_owner(key, token, deadline)
                if isinstance(outcome, bytes):
                    self._count("coalesced")
                    return outcome, "hit"
                if outcome is _LOCK_GONE:
                    continue
                locked = outcome is _WON
            owned = locked is True
            try:
                if owned:
                    cached = await self._aattempt("get", self._backend_get, key)
                    if isinstance(cached, bytes):
                        return cached, "hit"
                value = await compute()
                if store_if is None or store_if(value):
                    await self._astore(key, value, ttl_s, even_if_paused=owned)
                return value, "miss"
            finally:
                if owned:
                    await self._aattempt("unlock", self._backend_unlock, key, token, even_if_paused=True)

    async def _await_owner(self, key: str, token: str, deadline: float) -> bytes | _Outcome:
        pause = self.policy.lock_poll_s
        while True:
            await asyncio.sleep(pause)
            pause = min(2 * pause, _MAX_POLL_S)
            value = await self._aattempt("get", self._backend_get, key)
            if isinstance(value, bytes):
                return value
            owner = await self._aattempt("lock owner", self._backend_lock_owner, key)
            outcome = self._after_poll(owner, token, deadline)
            if outcome is not None:
                return outcome

    @staticmethod
    def _after_poll(owner: str | _Failed | None, token: str, deadline: float) -> _Outcome | None:
        """What one look at the lock means while waiting; None = keep waiting."""
        if isinstance(owner, _Failed):
            return _GIVE_UP
        if owner == token:
            return _WON
        if owner is None:
            return _LOCK_GONE if time.monotonic() < deadline else _GIVE_UP
        return _GIVE_UP if time.monotonic() >= deadline else None

    # ---- failure handling -----------------------------------------------------------

    def _jittered(self, ttl_s: float) -> float:
        jitter = self.policy.ttl_jitter
        return ttl_s * self._rng.uniform(1.0 - jitter, 1.0 + jitter) if jitter else ttl_s

    def _store(self, key: str, value: bytes, ttl_s: float, *, even_if_paused: bool = False) -> None:
        stored = self._attempt(
            "set", self._backend_set, key, value, self._jittered(ttl_s), even_if_paused=even_if_paused
        )
        if stored is None:
            self._count("sets")

    async def _astore(self, key: str, value: bytes, ttl_s: float, *, even_if_paused: bool = False) -> None:
        stored = await self._aattempt(
            "set", self._backend_set, key, value, self._jittered(ttl_s), even_if_paused=even_if_paused
        )
        if stored is None:
            self._count("sets")

    def _attempt(
        self, operation: str, function: Callable[..., T], *args: Any, even_if_paused: bool = False
    ) -> T | _Failed:
        """``function(*args)``, or ``_FAILED`` if it raised (logged, counted) or the
        backend is paused after a failure (unless ``even_if_paused``)."""
        if not even_if_paused and self._backend_paused():
            return _FAILED
        try:
            return function(*args)
        except Exception as exc:
            self._note_failure(operation, exc)
            return _FAILED

    async def _aattempt(
        self, operation: str, function: Callable[..., T], *args: Any, even_if_paused: bool = False
    ) -> T | _Failed:
        if not even_if_paused and self._backend_paused():
            return _FAILED
        try:
            if self._blocking_backend:
                return await asyncio.to_thread(function, *args)
            return function(*args)
        except Exception as exc:
            self._note_failure(operation, exc)
            return _FAILED

    def _backend_paused(self) -> bool:
        if time.monotonic() < self._backend_down_until:
            self._count("bypassed")
            return True
        return False

    def _note_failure(self, operation: str, exc: Exception) -> None:
        self._count("errors")
        now = time.monotonic()
        if self.policy.backend_retry_s > 0.0:
            self._backend_down_until = now + self.policy.backend_retry_s
        with self._stats_lock:
            if now - self._last_warning_at < self.policy.log_interval_s:
                self._suppressed_warnings += 1
                return
            suppressed, self._suppressed_warnings = self._suppressed_warnings, 0
            self._last_warning_at = now
        logger.warning(
            "route cache %s failed (%s: %s); serving without the cache%s",
            operation,
            type(exc).__name__,
            exc,
            f" ({suppressed} similar failures not logged)" if suppressed else "",
        )

    def _count(self, *names: str) -> None:
        with self._stats_lock:
            for name in names:
                self._counts[name] += 1

    def _count_outcome(self, status: CacheStatus) -> None:
        self._count("hits" if status == "hit" else "misses")
