"""The route cache: a port with an in-memory and a Redis adapter, and route cache keys."""

from __future__ import annotations

from route_cache.keys import ROUTE_KEY_PREFIX, route_cache_key
from route_cache.memory import InMemoryRouteCache
from route_cache.port import CachePolicy, CacheStatus, RouteCache, RouteCacheUnavailable
from route_cache.redis_cache import RedisRouteCache

__all__ = [
    "ROUTE_KEY_PREFIX",
    "CachePolicy",
    "CacheStatus",
    "InMemoryRouteCache",
    "RedisRouteCache",
    "RouteCache",
    "RouteCacheUnavailable",
    "make_cache",
    "route_cache_key",
]


def make_cache(redis_url: str | None, prefix: str = "routing:", *, policy: CachePolicy | None = None) -> RouteCache:
    """The cache for ``ROUTING_REDIS_URL``: Redis at ``redis_url`` with every key under
    ``prefix``, or, when ``redis_url`` is None or empty, an in-memory cache of this process
    (``prefix`` is then irrelevant). Connects to nothing yet."""
    if not redis_url:
        return InMemoryRouteCache(policy=policy)
    return RedisRouteCache(redis_url, prefix=prefix, policy=policy)
