"""One API replica in its own process, for the cross-process single-flight test.

Kept out of the test module so that a spawned child imports only this and route_cache.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import redis

from route_cache import RedisRouteCache

COMPUTE_DELAY_S = 0.3


def run_replica(
    url: str, prefix: str, key: str, counter: str, threads: int, start: Barrier, statuses: Queue[str]
) -> None:
    """Call ``get_or_compute(key)`` from ``threads`` threads once every replica is ready;
    each computation increments the Redis key ``counter``; put each status on ``statuses``."""
    cache = RedisRouteCache(url, prefix=prefix)
    counting = redis.Redis.from_url(url)

    def compute() -> bytes:
        counting.incr(counter)
        time.sleep(COMPUTE_DELAY_S)
        return b"route"

    def call(_: int) -> str:
        value, status = cache.get_or_compute(key, compute, ttl_s=60)
        return status if value == b"route" else f"wrong value {value!r}"

    start.wait(timeout=60)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for status in pool.map(call, range(threads)):
            statuses.put(status)
    counting.close()
    cache.close()
