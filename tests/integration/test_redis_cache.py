"""The Redis route cache against a real Redis server (ROUTING_TEST_REDIS_URL).

Every test works under its own key prefix and flushes it afterwards, so runs can share
a server. Losing the server is simulated with a TCP relay between the cache and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from route_cache import CachePolicy, RedisRouteCache, RouteCacheUnavailable, make_cache
from tests.conftest import require
from tests.integration.cache_replica import run_replica

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("ROUTING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(False, f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"routing-test:{uuid.uuid4().hex}:"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client, to look at what the cache wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class CacheFactory(Protocol):
    def __call__(self, policy: CachePolicy | None = None) -> RedisRouteCache: ...


@pytest.fixture
def make_redis_cache(redis_url: str, prefix: str) -> Iterator[CacheFactory]:
    """Builds caches on the test's prefix, each with its own client (as separate API
    replicas would have); flushes the prefix and closes them afterwards."""
    made: list[RedisRouteCache] = []

    def make(policy: CachePolicy | None = None) -> RedisRouteCache:
        cache = RedisRouteCache(redis_url, prefix=prefix, policy=policy)
        made.append(cache)
        return cache

    yield make
    RedisRouteCache(redis_url, prefix=prefix).flush()
    for cache in made:
        cache.close()


@pytest.fixture
def cache(make_redis_cache: CacheFactory) -> RedisRouteCache:
    return make_redis_cache()


class SlowCompute:
    """A computation taking ``delay_s`` seconds that counts its runs (thread-safe)."""

    def __init__(self, value: bytes = b"route", delay_s: float = 0.3) -> None:
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


class TcpRelay:
    """Forwards a local port to Redis. ``stop()`` drops every connection and refuses new
    ones, as a dead server would; ``start()`` serves again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._running = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._running.set()
        accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        accepting.start()
        self._threads.append(accepting)

    def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            self._close(connection)

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._connections += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(target)

    @staticmethod
    def _close(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()


def via_relay(redis_url: str, relay_port: int) -> str:
    parts = urlsplit(redis_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{relay_port}" if credentials else f"127.0.0.1:{relay_port}"
    return urlunsplit(parts._replace(netloc=netloc))


def run_in_threads(count: int, call: Callable[[int], tuple[bytes, str]]) -> list[tuple[bytes, str]]:
    """``call(i)`` for i in range(count), from ``count`` threads released at one moment."""
    barrier = threading.Barrier(count)

    def released(index: int) -> tuple[bytes, str]:
        barrier.wait()
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(released, range(count), timeout=60))


# ---- storage -------------------------------------------------------------------------


def test_set_get_and_ttl_within_the_jitter_range(cache: RedisRouteCache, raw: redis.Redis, prefix: str) -> None:
    assert cache.get("k0") is None
    for i in range(20):
        cache.set(f"k{i}", b"value %d" % i, ttl_s=100)
    ttls_ms = [raw.pttl(f"{prefix}k{i}") for i in range(20)]
    assert all(89_000 <= ttl <= 110_000 for ttl in ttls_ms), ttls_ms  # 90-110 s, less the time passed
    assert len(set(ttls_ms)) > 1  # jittered, not all equal
    assert cache.get("k3") == b"value 3"
    assert raw.get(f"{prefix}k3") == b"value 3"
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["sets"], stats["errors"]) == (1, 1, 20, 0)


def test_values_expire(make_redis_cache: CacheFactory) -> None:
    cache = make_redis_cache(policy=CachePolicy(ttl_jitter=0.0))
    cache.set("k", b"v", ttl_s=0.3)
    assert cache.get("k") == b"v"
    time.sleep(0.4)
    assert cache.get("k") is None


def test_flush_removes_only_its_own_prefix(redis_url: str, raw: redis.Redis) -> None:
    # A prefix with glob characters: flush must treat it literally (no "a:" from "[ab]:").
    base = f"routing-test:{uuid.uuid4().hex}:"
    cache = RedisRouteCache(redis_url, prefix=base + "[ab]*:")
    neighbours = [base + "a:k", base + "[ab]x:k", base + "other:k"]
    try:
        for name in neighbours:
            raw.set(name, b"keep", px=60_000)
        for i in range(3):
            cache.set(f"k{i}", b"v", ttl_s=60)
        assert cache._backend_try_lock("k0", "token", 60.0)
        assert cache.flush() == 4  # three values and one lock
        assert cache.get("k0") is None
        assert [raw.get(name) for name in neighbours] == [b"keep"] * 3
        assert cache.flush() == 0
    finally:
        raw.delete(*neighbours)
        cache.flush()
        cache.close()


def test_flush_works_through_many_keys(cache: RedisRouteCache, raw: redis.Redis, prefix: str) -> None:
    with raw.pipeline(transaction=False) as pipeline:
        for i in range(1200):
            pipeline.set(f"{prefix}k{i}", b"v", px=60_000)
        pipeline.execute()
    assert cache.flush() == 1200
    assert list(raw.scan_iter(match=prefix + "*")) == []


def test_ping(cache: RedisRouteCache) -> None:
    assert cache.ping()


def test_make_cache_with_url_is_redis(redis_url: str, prefix: str) -> None:
    cache = make_cache(redis_url, prefix)
    try:
        assert isinstance(cache, RedisRouteCache)
        assert cache.prefix == prefix
    finally:
        cache.close()


def test_an_empty_prefix_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="prefix must not be empty"):
        RedisRouteCache(redis_url, prefix="")


# ---- locks ---------------------------------------------------------------------------


def test_unlock_deletes_only_a_lock_holding_its_token(
    make_redis_cache: CacheFactory, raw: redis.Redis, prefix: str
) -> None:
    mine, theirs = make_redis_cache(), make_redis_cache()
    assert mine._backend_try_lock("k", "token-A", 10.0)
    assert not theirs._backend_try_lock("k", "token-B", 10.0)
    assert not theirs._backend_unlock("k", "token-B")
    assert raw.get(f"{prefix}k:lock") == b"token-A"
    assert theirs._backend_lock_owner("k") == "token-A"
    assert 0 < raw.pttl(f"{prefix}k:lock") <= 10_000
    assert mine._backend_unlock("k", "token-A")
    assert raw.exists(f"{prefix}k:lock") == 0
    assert not mine._backend_unlock("k", "token-A")


def test_an_expired_lock_taken_by_another_replica_is_not_released_by_the_first(
    make_redis_cache: CacheFactory, raw: redis.Redis, prefix: str
) -> None:
    first, second = make_redis_cache(), make_redis_cache()
    assert first._backend_try_lock("k", "token-A", 0.05)
    time.sleep(0.1)
    assert second._backend_try_lock("k", "token-B", 10.0)
    assert not first._backend_unlock("k", "token-A")  # the late owner finishing
    assert raw.get(f"{prefix}k:lock") == b"token-B"


# ---- single-flight -------------------------------------------------------------------


def test_identical_misses_on_two_replicas_compute_once(make_redis_cache: CacheFactory) -> None:
    replicas = [make_redis_cache(), make_redis_cache()]  # separate clients, separate in-process flights
    compute = SlowCompute()
    results = run_in_threads(20, lambda i: replicas[i % 2].get_or_compute("k", compute, ttl_s=60))
    assert compute.calls == 1
    assert {value for value, _ in results} == {b"route"}
    assert sorted(status for _, status in results) == ["hit"] * 19 + ["miss"]
    assert replicas[0].get("k") == replicas[1].get("k") == b"route"


def test_identical_misses_in_separate_processes_compute_once(
    redis_url: str, prefix: str, raw: redis.Redis, cache: RedisRouteCache
) -> None:
    context = multiprocessing.get_context("spawn")
    processes, threads = 3, 4
    start = context.Barrier(processes)
    statuses = context.Queue()
    counter = f"{prefix}computations"
    replicas = [
        context.Process(target=run_replica, args=(redis_url, prefix, "k", counter, threads, start, statuses))
        for _ in range(processes)
    ]
    for replica in replicas:
        replica.start()
    collected = [statuses.get(timeout=60) for _ in range(processes * threads)]
    for replica in replicas:
        replica.join(timeout=30)
        assert replica.exitcode == 0
    assert raw.get(counter) == b"1"
    assert sorted(collected) == ["hit"] * (processes * threads - 1) + ["miss"]
    assert cache.get("k") == b"route"


def test_waits_for_another_replica_then_uses_its_value(make_redis_cache: CacheFactory) -> None:
    other, cache = make_redis_cache(), make_redis_cache()
    assert other._backend_try_lock("k", "other replica", 10.0)

    def other_replica_finishes() -> None:
        time.sleep(0.2)
        other.set("k", b"theirs", ttl_s=60)
        other._backend_unlock("k", "other replica")

    finisher = threading.Thread(target=other_replica_finishes)
    finisher.start()
    compute = SlowCompute(value=b"ours", delay_s=0.0)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"theirs", "hit")
    finisher.join()
    assert compute.calls == 0


def test_computes_itself_when_another_replica_holds_the_lock_too_long(
    make_redis_cache: CacheFactory,
) -> None:
    other = make_redis_cache()
    cache = make_redis_cache(policy=CachePolicy(lock_wait_s=0.1))
    assert other._backend_try_lock("k", "stuck replica", 60.0)
    compute = SlowCompute(value=b"ours", delay_s=0.0)
    assert cache.get_or_compute("k", compute, ttl_s=60) == (b"ours", "miss")
    assert other._backend_lock_owner("k") == "stuck replica"


def test_identical_async_misses_compute_once(make_redis_cache: CacheFactory) -> None:
    replicas = [make_redis_cache(), make_redis_cache()]
    compute = SlowCompute()

    async def main() -> list[tuple[bytes, str]]:
        calls = [replicas[i % 2].aget_or_compute("k", compute.compute_async, 60) for i in range(10)]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert compute.calls == 1
    assert sorted(results) == [(b"route", "hit")] * 9 + [(b"route", "miss")]
    assert asyncio.run(replicas[0].aget_or_compute("k", compute.compute_async, 60)) == (b"route", "hit")


# ---- a dead or lost server -------------------------------------------------------------


def test_a_dead_server_still_answers_with_the_computed_value() -> None:
    cache = RedisRouteCache(DEAD_REDIS_URL, prefix=f"routing-test:{uuid.uuid4().hex}:")
    try:
        assert cache.get_or_compute("k", lambda: b"computed", ttl_s=60) == (b"computed", "miss")
        assert cache.get("k") is None
        cache.set("k", b"v", ttl_s=60)
        compute = SlowCompute(value=b"computed", delay_s=0.0)
        assert asyncio.run(cache.aget_or_compute("k", compute.compute_async, 60)) == (b"computed", "miss")
        assert not cache.ping()
        with pytest.raises(RouteCacheUnavailable):
            cache.flush()
        stats = cache.stats()
        assert stats["errors"] > 0
        assert stats["hits"] == 0
        assert stats["sets"] == 0
    finally:
        cache.close()


def test_recovers_by_itself_when_the_server_comes_back(redis_url: str, prefix: str) -> None:
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        pytest.skip(f"the relay forwards TCP only, not {parts.scheme}://")
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 6379)
    relay.start()
    cache = RedisRouteCache(via_relay(redis_url, relay.port), prefix=prefix, policy=CachePolicy(backend_retry_s=0.0))
    try:
        cache.set("before", b"v", ttl_s=60)
        assert cache.get("before") == b"v"

        relay.stop()
        assert cache.get_or_compute("during", lambda: b"computed", ttl_s=60) == (b"computed", "miss")
        assert cache.get("before") is None
        assert not cache.ping()
        errors_while_down = cache.stats()["errors"]
        assert errors_while_down > 0

        relay.start()
        assert cache.get("before") == b"v"  # the first command after the outage reconnects
        assert cache.get_or_compute("after", lambda: b"computed", ttl_s=60) == (b"computed", "miss")
        assert cache.get("after") == b"computed"
        assert cache.ping()
        assert cache.stats()["errors"] == errors_while_down
    finally:
        cache.flush()
        cache.close()
        relay.stop()


def test_a_server_restart_between_commands_is_invisible(redis_url: str, prefix: str) -> None:
    # The pooled connection dies with the relay; the next command reconnects without an error.
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        pytest.skip(f"the relay forwards TCP only, not {parts.scheme}://")
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 6379)
    relay.start()
    cache = RedisRouteCache(via_relay(redis_url, relay.port), prefix=prefix)
    try:
        cache.set("k", b"v", ttl_s=60)
        relay.stop()
        relay.start()
        assert cache.get("k") == b"v"
        assert cache.stats()["errors"] == 0
    finally:
        cache.flush()
        cache.close()
        relay.stop()
