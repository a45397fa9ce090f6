"""The Redis route cache: shared by every API replica that points at the same server.

Every key this adapter writes starts with its ``prefix``: values under
``{prefix}{key}``, single-flight locks under ``{prefix}{key}:lock``. ``flush()``
deletes exactly those (SCAN + UNLINK), never the whole database.

The client uses short socket timeouts (0.25 s by default) so that a dead or
unreachable server costs a request at most a fraction of a second (and, thanks to
the pause after a failure, see ``CachePolicy.backend_retry_s``, only once per
period). redis-py opens connections on demand, per command: once the server is back
the next command reconnects, nothing needs restarting (a pooled connection the server
closed while idle is noticed when it is taken from the pool, and replaced; one
immediate retry covers a connection lost in the middle of a command).
"""

from __future__ import annotations

import random
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from route_cache.port import CachePolicy, RouteCache

# Delete the lock only if it still holds our token: GET and DEL in one atomic step, so
# a lock that expired and was taken by another process is left to its new owner.
_UNLOCK_SCRIPT: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""

_LOCK_SUFFIX: Final = ":lock"
_SCAN_COUNT: Final = 1000
_UNLINK_BATCH: Final = 500


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _as_bytes(reply: bytes | str) -> bytes:
    # The client is made without decode_responses, so replies are bytes; the type
    # stubs cannot know that.
    return reply if isinstance(reply, bytes) else reply.encode()


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000.0))


class RedisRouteCache(RouteCache):
    """A route cache in Redis at ``url`` (``redis://[user:password@]host:port/db``),
    every key under ``prefix`` (not empty).

    ``connect_timeout_s`` and ``socket_timeout_s`` bound each connection attempt and
    each reply, seconds. Nothing connects before the first operation.
    """

    _blocking_backend = True

    def __init__(
        self,
        url: str,
        prefix: str = "routing:",
        *,
        policy: CachePolicy | None = None,
        connect_timeout_s: float = 0.25,
        socket_timeout_s: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        if not prefix:
            # An empty prefix would make flush() delete the whole database.
            raise ValueError("prefix must not be empty")
        if not connect_timeout_s > 0.0 or not socket_timeout_s > 0.0:
            raise ValueError(
                f"timeouts must be > 0, got connect_timeout_s={connect_timeout_s}, socket_timeout_s={socket_timeout_s}"
            )
        super().__init__(policy=policy, rng=rng)
        self.prefix = prefix
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            # One immediate retry, on connection errors only: a timeout is not retried,
            # so a hung server costs one timeout, not several.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._unlock_script = self._client.register_script(_UNLOCK_SCRIPT)

    def close(self) -> None:
        self._client.close()

    def _value_key(self, key: str) -> str:
        return self.prefix + key

    def _lock_key(self, key: str) -> str:
        return self.prefix + key + _LOCK_SUFFIX

    def _backend_get(self, key: str) -> bytes | None:
        value = self._client.get(self._value_key(key))
        return None if value is None else _as_bytes(value)

    def _backend_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._client.set(self._value_key(key), value, px=_milliseconds(ttl_s))

    def _backend_try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        return bool(self._client.set(self._lock_key(key), token, nx=True, px=_milliseconds(ttl_s)))

    def _backend_lock_owner(self, key: str) -> str | None:
        owner = self._client.get(self._lock_key(key))
        return None if owner is None else _as_bytes(owner).decode()

    def _backend_unlock(self, key: str, token: str) -> bool:
        return bool(self._unlock_script(keys=[self._lock_key(key)], args=[token]))

    def _backend_flush(self) -> int:
        removed = 0
        batch: list[bytes] = []
        for name in self._client.scan_iter(match=_glob_escape(self.prefix) + "*", count=_SCAN_COUNT):
            batch.append(name)
            if len(batch) >= _UNLINK_BATCH:
                removed += int(self._client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self._client.unlink(*batch))
        return removed

    def _backend_ping(self) -> None:
        self._client.ping()
