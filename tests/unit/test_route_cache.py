"""The route cache port on its in-memory adapter: LRU, expiry, stats, keys, single-flight,
and how it serves through a failing backend (a fake that raises)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from route_cache import CachePolicy, InMemoryRouteCache, RouteCache, make_cache, route_cache_key
from route_cache.port import RouteCacheUnavailable


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ComputeCounter:
    """A slow computation that counts how often it ran (thread-safe)."""

    def __init__(self, value: bytes = b"route", delay_s: float = 0.2) -> None:
        self.value = value
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return self.value

    async def compute_async(self) -> bytes:
        with self._lock:
            self.calls += 1
        await asyncio.sleep(self.delay_s)
        return self.value


class FlakyBackendCache(InMemoryRouteCache):
    """A fake backend that raises ConnectionError on every operation while ``down``."""

    def __init__(self, *, policy: CachePolicy | None = None) -> None:
        super().__init__(policy=policy)
        self.down = True

    def _fail_if_down(self) -> None:
        if self.down:
            raise ConnectionError("backend unreachable (fake)")

    def _backend_get(self, key: str) -> bytes | None:
        self._fail_if_down()
        return super()._backend_get(key)

    def _backend_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._fail_if_down()
        super()._backend_set(key, value, ttl_s)

    def _backend_try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        self._fail_if_down()
        return super()._backend_try_lock(key, token, ttl_s)

    def _backend_lock_owner(self, key: str) -> str | None:
        self._fail_if_down()
        return super()._backend_lock_owner(key)

    def _backend_unlock(self, key: str, token: str) -> bool:
        self._fail_if_down()
        return super()._backend_unlock(key, token)

    def _backend_flush(self) -> int:
        self._fail_if_down()
        return super()._backend_flush()

    def _backend_ping(self) -> None:
        self._fail_if_down()


def no_jitter(**overrides: Any) -> CachePolicy:
    return CachePolicy(ttl_jitter=0.0, **overrides)


def run_in_threads(count: int, call: Callable[[], tuple[bytes, str]]) -> list[tuple[bytes, str]]:
    """``call()`` from ``count`` threads released at the same moment."""
    barrier = threading.Barrier(count)

    def released() -> tuple[bytes, str]:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(released) for _ in range(count)]
        return [future.result(timeout=30) for future in futures]


# ---- keys ------------------------------------------------------------------------


BASE_KEY_PARTS: dict[str, Any] = {
    "snapped_stops": [("a", 10, 2500), ("b", 11, 0), ("c", 12, 9999)],
    "start": (24.9384, 60.1699),
    "end": "open",
    "depart_bucket": 33,
    "options": {"overview": "false", "annotations": ["duration"]},
    "graph_version": 3,
    "traffic_epoch": 17,
    "model_version": "sha256:abc",
}


def test_key_is_stable_and_prefixed() -> None:
    key = route_cache_key(**BASE_KEY_PARTS)
    assert re.fullmatch(r"route:v1:[0-9a-f]{64}", key)
    assert route_cache_key(**BASE_KEY_PARTS) == key
    reordered_options = dict(BASE_KEY_PARTS, options={"annotations": ["duration"], "overview": "false"})
    assert route_cache_key(**reordered_options) == key


def test_key_does_not_depend_on_stop_order() -> None:
    key = route_cache_key(**BASE_KEY_PARTS)
    for order in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
        stops = [BASE_KEY_PARTS["snapped_stops"][i] for i in order]
        assert route_cache_key(**dict(BASE_KEY_PARTS, snapped_stops=stops)) == key


def test_key_counts_repeated_stops() -> None:
    stops = BASE_KEY_PARTS["snapped_stops"]
    assert route_cache_key(**dict(BASE_KEY_PARTS, snapped_stops=[*stops, stops[0]])) != route_cache_key(
        **BASE_KEY_PARTS
    )


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("snapped_stops", [("a", 10, 2500), ("b", 11, 0), ("c", 12, 9998)]),
        ("snapped_stops", [("a", 10, 2500), ("b", 11, 0)]),
        ("snapped_stops", [("a", 10, 2500), ("b", 11, 0), ("d", 12, 9999)]),
        ("start", (24.9384, 60.1698)),
        ("end", (24.9384, 60.1699)),
        ("end", "return"),
        ("depart_bucket", 34),
        ("options", {"overview": "full", "annotations": ["duration"]}),
        ("options", {"overview": "false", "annotations": ["duration", "distance"]}),
        ("options", {"overview": "false"}),
        ("graph_version", 4),
        ("graph_version", "3"),
        ("traffic_epoch", 18),
        ("model_version", "sha256:abd"),
    ],
)
def test_key_changes_with_every_part(part: str, value: object) -> None:
    assert route_cache_key(**dict(BASE_KEY_PARTS, **{part: value})) != route_cache_key(**BASE_KEY_PARTS)


def test_key_parts_do_not_bleed_into_each_other() -> None:
    # The same value moved from one field to another must give another key.
    swapped = dict(BASE_KEY_PARTS, traffic_epoch=33, depart_bucket=17)
    assert route_cache_key(**swapped) != route_cache_key(**BASE_KEY_PARTS)


def test_key_treats_numpy_scalars_as_numbers() -> None:
    stops = [("a", np.int64(10), np.int32(2500)), ("b", 11, 0), ("c", 12, 9999)]
    numpy_parts = dict(BASE_KEY_PARTS, snapped_stops=stops, traffic_epoch=np.int64(17))
    assert route_cache_key(**numpy_parts) == route_cache_key(**BASE_KEY_PARTS)


@pytest.mark.parametrize(
    ("part", "value", "error"),
    [
        ("options", {"ids": {1, 2}}, TypeError),
        ("options", {1: "x"}, TypeError),
        ("start", (float("nan"), 60.0), ValueError),
    ],
)
def test_key_refuses_values_that_are_not_plain_data(part: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        route_cache_key(**dict(BASE_KEY_PARTS, **{part: value}))


# ---- the in-memory adapter ---------------------------------------------------------


def test_get_returns_what_set_stored() -> None:
    cache = InMemoryRouteCache()
    assert cache.get("k") is None
    cache.set("k", b"v", ttl_s=60)
    assert cache.get("k") == b"v"


def test_lru_evicts_the_least_recently_used() -> None:
    cache = InMemoryRouteCache(max_entries=2, policy=no_jitter())
    cache.set("a", b"1", ttl_s=60)
    cache.set("b", b"2", ttl_s=60)
    assert cache.get("a") == b"1"  # a is now more recent than b
    cache.set("c", b"3", ttl_s=60)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"


def test_overwriting_refreshes_recency_and_value() -> None:
    cache = InMemoryRouteCache(max_entries=2, policy=no_jitter())
    cache.set("a", b"1", ttl_s=60)
    cache.set("b", b"2", ttl_s=60)
    cache.set("a", b"1'", ttl_s=60)
    cache.set("c", b"3", ttl_s=60)
    assert cache.get("a") == b"1'"
    assert cache.get("b") is None


def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache = InMemoryRouteCache(policy=no_jitter(), clock=clock)
    cache.set("k", b"v", ttl_s=10)
    clock.advance(9.999)
    assert cache.get("k") == b"v"
    clock.advance(0.001)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_ttl_jitter_stays_within_its_range() -> None:
    clock = FakeClock()
    cache = InMemoryRouteCache(policy=CachePolicy(ttl_jitter=0.1), clock=clock, rng=random.Random(7))
    keys = [f"k{i}" for i in range(200)]
    for key in keys:
        cache.set(key, b"v", ttl_s=100)
    clock.advance(89.999)
    assert all(cache.get(key) == b"v" for key in keys)
    clock.advance(10.001)  # at the nominal TTL: some kept longer, some shorter
    alive = sum(cache.get(key) is not None for key in keys)
    assert 0 < alive < len(keys)
    clock.advance(10.001)
    assert all(cache.get(key) is None for key in keys)


def test_ttl_must_be_positive() -> None:
    cache = InMemoryRouteCache()
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        cache.set("k", b"v", ttl_s=0)
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        cache.get_or_compute("k", lambda: b"v", ttl_s=-1)


def test_stats_count_hits_misses_and_sets() -> None:
    cache = InMemoryRouteCache()
    cache.get("k")
    cache.set("k", b"v", ttl_s=60)
    cache.get("k")
    assert cache.get_or_compute("k", lambda: b"other", ttl_s=60) == (b"v", "hit")
    assert cache.get_or_compute("j", lambda: b"w", ttl_s=60) == (b"w", "miss")
    assert cache.get("j") == b"w"
    assert cache.stats() == {"hits": 3, "misses": 2, "errors": 0, "sets": 2, "coalesced": 0, "bypassed": 0}


def test_flush_removes_everything_and_says_how_much() -> None:
    cache = InMemoryRouteCache()
    for key in ("a", "b", "c"):
        cache.set(key, b"v", ttl_s=60)
    assert cache.flush() == 3
    assert cache.get("a") is None
    assert cache.flush() == 0


def test_ping_answers() -> None:
    assert InMemoryRouteCache().ping()


def test_make_cache_without_url_is_in_memory() -> None:
    assert isinstance(make_cache(None, "routing:"), InMemoryRouteCache)
    assert isinstance(make_cache("", "routing:"), InMemoryRouteCache)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ttl_jitter": 1.0}, "ttl_jitter must be in [0, 1), got 1.0"),
        ({"ttl_jitter": -0.1}, "ttl_jitter must be in [0, 1), got -0.1"),
        ({"lock_ttl_s": 0.0}, "lock_ttl_s must be > 0, got 0.0"),
        ({"lock_wait_s": -1.0}, "lock_wait_s must be >= 0 or None, got -1.0"),
        ({"lock_poll_s": 0.0}, "lock_poll_s must be > 0, got 0.0"),
        ({"backend_retry_s": -1.0}, "backend_retry_s must be >= 0, got -1.0"),
        ({"log_interval_s": -1.0}, "log_interval_s must be >= 0, got -1.0"),
    ],
)
def test_policy_refuses_out_of_range_values(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CachePolicy(**fields)  # type: ignore[arg-type]


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries must be >= 1, got 0"):
        InMemoryRouteCache(max_entries=0)


# ---- locks -------------------------------------------------------------------------


def test_lock_is_exclusive_and_released_only_by_its_owner() -> None:
    clock = FakeClock()
    cache = InMemoryRouteCache(clock=clock)
    assert cache._backend_try_lock("k", "mine", 5.0)
    assert not cache._backend_try_lock("k", "theirs", 5.0)
    assert not cache._backend_unlock("k", "theirs")
    assert cache._backend_lock_owner("k") == "mine"
    assert cache._backend_unlock("k", "mine")
    assert cache._backend_lock_owner("k") is None
    assert cache._backend_try_lock("k", "theirs", 5.0)
    clock.advance(5.0)
    assert cache._backend_lock_owner("k") is None  # expired
    assert cache._backend_try_lock("k", "mine", 5.0)


# ---- single-flight -----------------------------------------------------------------


def test_concurrent_identical_misses_compute_once() -> None:
    cache = InMemoryRouteCache()
    compute = ComputeCounter()
    results = run_in_threads(20, lambda: cache.get_or_compute("k", compute, ttl_s=60))
    assert compute.calls == 1
    assert {value for value, _ in results} == {b"route"}
    assert sorted(status for _, status in results) == ["hit"] * 19 + ["miss"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (19, 1, 1)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"route", "hit")
    assert compute.calls == 1


class LocklessCache(InMemoryRouteCache):
    """A fake backend whose lock never excludes anyone: only in-process single-flight is left."""

    def _backend_try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        return True


def test_in_process_single_flight_does_not_need_the_backend_lock() -> None:
    cache = LocklessCache()
    compute = ComputeCounter()
    results = run_in_threads(20, lambda: cache.get_or_compute("k", compute, ttl_s=60))
    assert compute.calls == 1
    assert sorted(status for _, status in results) == ["hit"] * 19 + ["miss"]
    assert cache.stats()["coalesced"] == 19

    async def main() -> list[tuple[bytes, str]]:
        calls = (cache.aget_or_compute("j", compute.compute_async, 60) for _ in range(10))
        return await asyncio.gather(*calls)

    assert sorted(status for _, status in asyncio.run(main())) == ["hit"] * 9 + ["miss"]
    assert compute.calls == 2


def test_different_keys_compute_separately() -> None:
    cache = InMemoryRouteCache()
    compute = ComputeCounter(delay_s=0.05)
    keys = iter(range(10))
    lock = threading.Lock()

    def next_key() -> tuple[bytes, str]:
        with lock:
            key = f"k{next(keys)}"
        return cache.get_or_compute(key, compute, ttl_s=60)

    run_in_threads(10, next_key)
    assert compute.calls == 10


def test_a_failing_computation_fails_every_waiter_and_caches_nothing() -> None:
    cache = InMemoryRouteCache()
    calls = 0

    def failing() -> bytes:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        raise RuntimeError("no route")

    def call() -> tuple[bytes, str]:
        try:
            return cache.get_or_compute("k", failing, ttl_s=60)
        except RuntimeError as exc:
            return str(exc).encode(), "raised"

    results = run_in_threads(5, call)
    assert results == [(b"no route", "raised")] * 5
    assert calls == 1
    assert cache.get("k") is None
    assert cache._backend_lock_owner("k") is None  # released despite the failure
    assert cache.get_or_compute("k", lambda: b"v", ttl_s=60) == (b"v", "miss")


def test_waits_for_another_lock_owner_then_uses_its_value() -> None:
    # The lock held under a foreign token stands for another process computing the value.
    cache = InMemoryRouteCache()
    assert cache._backend_try_lock("k", "other process", 10.0)

    def other_process_finishes() -> None:
        time.sleep(0.2)
        cache._backend_set("k", b"theirs", 60.0)
        cache._backend_unlock("k", "other process")

    finisher = threading.Thread(target=other_process_finishes)
    finisher.start()
    compute = ComputeCounter(value=b"ours")
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"theirs", "hit")
    finisher.join()
    assert compute.calls == 0
    assert cache.stats()["coalesced"] == 1


def test_takes_over_when_the_lock_disappears_without_a_value() -> None:
    cache = InMemoryRouteCache()
    assert cache._backend_try_lock("k", "other process", 10.0)
    releaser = threading.Timer(0.1, cache._backend_unlock, args=("k", "other process"))
    releaser.start()
    compute = ComputeCounter(value=b"ours", delay_s=0.0)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"ours", "miss")
    releaser.join()
    assert compute.calls == 1
    assert cache._backend_lock_owner("k") is None


def test_computes_itself_when_the_lock_owner_takes_too_long() -> None:
    cache = InMemoryRouteCache(policy=CachePolicy(lock_wait_s=0.1))
    assert cache._backend_try_lock("k", "stuck process", 60.0)
    compute = ComputeCounter(value=b"ours", delay_s=0.0)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"ours", "miss")
    assert compute.calls == 1
    assert cache.get("k") == b"ours"
    assert cache._backend_lock_owner("k") == "stuck process"  # not ours to delete


# ---- asyncio -----------------------------------------------------------------------


def test_concurrent_identical_async_misses_compute_once() -> None:
    cache = InMemoryRouteCache()
    compute = ComputeCounter()

    async def main() -> list[tuple[bytes, str]]:
        return await asyncio.gather(*(cache.aget_or_compute("k", compute.compute_async, 60) for _ in range(10)))

    results = asyncio.run(main())
    assert compute.calls == 1
    assert sorted(results) == [(b"route", "hit")] * 9 + [(b"route", "miss")]
    assert asyncio.run(cache.aget_or_compute("k", compute.compute_async, 60)) == (b"route", "hit")


def test_a_waiter_takes_over_when_the_async_leader_is_cancelled() -> None:
    cache = InMemoryRouteCache()
    compute = ComputeCounter(delay_s=0.2)

    async def main() -> tuple[bytes, str]:
        leader = asyncio.create_task(cache.aget_or_compute("k", compute.compute_async, 60))
        await asyncio.sleep(0.05)  # the leader is computing
        waiter = asyncio.create_task(cache.aget_or_compute("k", compute.compute_async, 60))
        await asyncio.sleep(0.05)  # the waiter waits for the leader
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await waiter

    assert asyncio.run(main()) == (b"route", "miss")
    assert compute.calls == 2
    assert cache._backend_lock_owner("k") is None


def test_a_failing_async_computation_raises_for_every_waiter() -> None:
    cache = InMemoryRouteCache()

    async def failing() -> bytes:
        await asyncio.sleep(0.1)
        raise RuntimeError("no route")

    async def main() -> list[object]:
        return await asyncio.gather(
            *(cache.aget_or_compute("k", failing, 60) for _ in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) for result in results)
    assert cache.get("k") is None


# ---- a failing backend ---------------------------------------------------------------


def test_a_failing_backend_still_answers_with_the_computed_value() -> None:
    cache = FlakyBackendCache(policy=CachePolicy(backend_retry_s=0.0))
    compute = ComputeCounter(value=b"computed", delay_s=0.0)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"computed", "miss")
    assert cache.get("k") is None
    cache.set("k", b"v", ttl_s=60)  # ignored, not raised
    assert not cache.ping()
    stats = cache.stats()
    assert stats["errors"] >= 4  # get, lock, set in get_or_compute; get; set; ping
    assert stats["misses"] == 2
    assert stats["sets"] == 0


def test_a_failing_backend_does_not_fail_async_callers() -> None:
    cache = FlakyBackendCache(policy=CachePolicy(backend_retry_s=0.0))
    compute = ComputeCounter(value=b"computed", delay_s=0.0)
    assert asyncio.run(cache.aget_or_compute("k", compute.compute_async, 60)) == (b"computed", "miss")
    assert cache.stats()["errors"] >= 3


def test_the_backend_is_bypassed_for_a_while_after_a_failure_and_ping_ends_the_pause() -> None:
    cache = FlakyBackendCache(policy=CachePolicy(backend_retry_s=3600.0))
    assert cache.get_or_compute("k", lambda: b"v", ttl_s=60) == (b"v", "miss")
    assert cache.stats()["errors"] == 1  # the first get; lock and set were bypassed
    cache.down = False
    assert cache.get("k") is None  # still paused: not even asked
    assert cache.stats()["errors"] == 1
    assert cache.stats()["bypassed"] >= 3
    assert cache.ping()
    cache.set("k", b"v", ttl_s=60)
    assert cache.get("k") == b"v"


class RecheckFailsCache(InMemoryRouteCache):
    """A fake backend whose second lookup of a key fails once (the re-check under the lock)."""

    def __init__(self) -> None:
        super().__init__(policy=CachePolicy(backend_retry_s=3600.0))
        self.lookups = 0

    def _backend_get(self, key: str) -> bytes | None:
        self.lookups += 1
        if self.lookups == 2:
            raise ConnectionError("one lost reply (fake)")
        return super()._backend_get(key)


def test_a_lock_owner_stores_and_unlocks_even_while_the_backend_is_paused() -> None:
    cache = RecheckFailsCache()
    assert cache.get_or_compute("k", lambda: b"v", ttl_s=60) == (b"v", "miss")
    assert cache.stats()["errors"] == 1
    assert cache._backend_get("k") == b"v"  # stored for the replicas waiting on it
    assert cache._backend_lock_owner("k") is None  # and released for them
    assert cache.get("k") is None  # other operations are paused


def test_backend_failures_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    cache = FlakyBackendCache(policy=CachePolicy(backend_retry_s=0.0, log_interval_s=3600.0))
    with caplog.at_level(logging.WARNING, logger="route_cache"):
        for _ in range(5):
            cache.get("k")
    warnings = [record for record in caplog.records if record.name == "route_cache"]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()
    assert cache.stats()["errors"] == 5


def test_flush_reports_a_failing_backend() -> None:
    cache: RouteCache = FlakyBackendCache()
    with pytest.raises(RouteCacheUnavailable, match="ConnectionError"):
        cache.flush()


def test_aget_or_compute_stores_only_what_store_if_accepts() -> None:
    cache = InMemoryRouteCache()

    async def compute() -> bytes:
        return b"degraded"

    async def go() -> None:
        value, status = await cache.aget_or_compute("k", compute, 60.0, store_if=lambda v: v != b"degraded")
        assert (value, status) == (b"degraded", "miss")
        assert cache.get("k") is None  # handed back, not stored
        value, status = await cache.aget_or_compute("k", compute, 60.0)
        assert status == "miss" and cache.get("k") == b"degraded"

    asyncio.run(go())
