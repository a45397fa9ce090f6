"""Access control: bearer tokens with roles, stored hashed, and per-token rate limits.

Roles: ``dispatcher`` (the whole fleet and every admin action) and ``driver`` (bound to
one driver id: plans routes, posts pings and reads routes for that driver only).

A token is ``rt_`` + 32 random bytes (URL-safe base64). Only its SHA-256 is stored: the
token is high-entropy random, so a fast hash is enough (a slow password hash protects
guessable secrets, which these are not). Verified tokens are cached in the process for
``FRESH_S`` seconds (so a revocation reaches every API instance within that time) and
kept as last-known-good for ``STALE_S`` seconds, used only while the database cannot be
reached: route requests keep being served through a database outage.

Rate limits are token buckets per token, per API process: a token's own ``rate_per_s``
(0 = unlimited) or its role's default; the burst is ``rate_limit_burst_s`` seconds of rate.
Past it: 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from graph_store.models import ApiToken

ROLES = ("driver", "dispatcher")
TOKEN_PREFIX = "rt_"


@dataclass(frozen=True)
class Principal:
    role: str
    driver_id: str | None
    token_id: int | None
    rate_per_s: float | None = None

    @property
    def is_dispatcher(self) -> bool:
        return self.role == "dispatcher"

    def may_act_for(self, driver_id: str) -> bool:
        return self.is_dispatcher or self.driver_id == driver_id


ANONYMOUS_DISPATCHER = Principal("dispatcher", None, None, 0.0)


class AuthError(Exception):
    """Refused by access control; ``app.py`` turns it into a JSON error with the right headers."""

    def __init__(self, status: int, kind: str, message: str, retry_after_s: int | None = None,
                 loc: list[str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.kind, self.message, self.retry_after_s, self.loc = status, kind, message, retry_after_s, loc

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"kind": self.kind, "msg": self.message}
        if self.loc:
            detail["loc"] = self.loc
        return {"detail": [detail]}

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="routing"'
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class AuthStoreUnavailable(Exception):
    """The token table cannot be read and the token is not in the last-known-good cache."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    FRESH_S = 5.0
    STALE_S = 3600.0
    MAX_CACHED = 10_000

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, role: str, driver_id: str | None = None, name: str | None = None,
               rate_per_s: float | None = None) -> str:  # fmt: skip
        """A new token; its plaintext is returned once and never stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if role == "driver" and not driver_id:
            raise ValueError("a driver token needs a driver id")
        if role == "dispatcher" and driver_id:
            raise ValueError("a dispatcher token is not bound to a driver id")
        if driver_id is not None and not 1 <= len(driver_id) <= 128:
            raise ValueError("driver id must be 1..128 characters")
        if rate_per_s is not None and (not math.isfinite(rate_per_s) or rate_per_s < 0):
            raise ValueError("rate limit must be >= 0 requests per second (0 = unlimited)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            session.add(ApiToken(token_hash=hash_token(token), prefix=token[:10], role=role, driver_id=driver_id,
                                 name=name, rate_per_s=rate_per_s, created_at=datetime.now(UTC)))  # fmt: skip
        return token

    def revoke(self, ref: str) -> int:
        """Revoke by full token, by its 10-character prefix or by numeric id; returns how many."""
        ref = ref.strip()
        if ref.startswith(TOKEN_PREFIX) and len(ref) > 10:
            cond = ApiToken.token_hash == hash_token(ref)
        elif ref.isdigit():
            cond = ApiToken.id == int(ref)
        else:
            cond = ApiToken.prefix == ref
        with self.sessions.begin() as session:
            ids = session.scalars(
                update(ApiToken)
                .where(cond, ApiToken.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
                .returning(ApiToken.id)
            ).all()
            n = len(ids)
        with self._lock:
            self._cache.clear()
        return int(n or 0)

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
        return [{"id": r.id, "prefix": r.prefix, "role": r.role, "driver_id": r.driver_id, "name": r.name,
                 "rate_per_s": r.rate_per_s, "created_at": r.created_at, "revoked": r.revoked_at is not None}
                for r in rows]  # fmt: skip

    def has_active(self, role: str) -> bool:
        with self.sessions() as session:
            return session.scalar(select(ApiToken.id).where(ApiToken.role == role, ApiToken.revoked_at.is_(None))
                                  .limit(1)) is not None  # fmt: skip

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(found fresh, principal) from the in-process cache, without touching the database."""
        entry = self._get(hash_token(token))
        if entry is not None and self._clock() - entry[1] < self.FRESH_S:
            return True, entry[0]
        return False, None

    def verify(self, token: str) -> Principal | None:
        """The token's principal, None when unknown or revoked; AuthStoreUnavailable when it cannot tell."""
        digest = hash_token(token)
        entry = self._get(digest)
        now = self._clock()
        if entry is not None and now - entry[1] < self.FRESH_S:
            return entry[0]
        try:
            with self.sessions() as session:
                row = session.scalar(
                    select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
                )
        except SQLAlchemyError as exc:
            if entry is not None and now - entry[1] < self.STALE_S:
                return entry[0]
            raise AuthStoreUnavailable(str(exc)) from None
        principal = None if row is None else Principal(row.role, row.driver_id, row.id, row.rate_per_s)
        with self._lock:
            self._cache[digest] = (principal, now)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.MAX_CACHED:
                self._cache.popitem(last=False)
        return principal

    def _get(self, digest: str) -> tuple[Principal | None, float] | None:
        with self._lock:
            return self._cache.get(digest)


class RateLimiter:
    """Token buckets, one per key; ``take`` answers (allowed, seconds until a token is back)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: object, rate_per_s: float, burst: float) -> tuple[bool, float]:
        if rate_per_s <= 0:
            return True, 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return True, 0.0
            self._buckets[key] = (tokens, now)
            return False, (1.0 - tokens) / rate_per_s


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
    return token


async def authenticated(request: Request) -> Principal:
    """The caller's principal (any role), rate-limited. Stored on ``request.state.principal``."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    c = request.app.state.container
    settings = c.settings
    if settings.auth == "off":
        request.state.principal = ANONYMOUS_DISPATCHER
        return ANONYMOUS_DISPATCHER
    token = _bearer(request)
    store: TokenStore = c.tokens
    fresh, principal = store.cached(token)
    if not fresh:
        try:
            principal = await asyncio.to_thread(store.verify, token)
        except AuthStoreUnavailable:
            c.metrics.errors.labels(kind="auth_store_unavailable").inc()
            raise AuthError(
                503, "auth_unavailable", "token store unreachable; retry shortly", retry_after_s=5
            ) from None
    if principal is None:
        raise AuthError(401, "unauthorized", "unknown or revoked token")
    rate = principal.rate_per_s
    if rate is None:
        rate = settings.rate_limit_dispatcher_per_s if principal.is_dispatcher else settings.rate_limit_driver_per_s
    allowed, wait_s = c.rate_limiter.take(principal.token_id, rate, max(1.0, rate * settings.rate_limit_burst_s))
    if not allowed:
        c.metrics.errors.labels(kind="rate_limited").inc()
        raise AuthError(429, "rate_limited", f"rate limit of {rate:g} requests/s exceeded",
                        retry_after_s=max(1, math.ceil(wait_s)))  # fmt: skip
    request.state.principal = principal
    return principal


async def require_dispatcher(request: Request) -> Principal:
    principal = await authenticated(request)
    if not principal.is_dispatcher:
        raise AuthError(403, "forbidden", "this needs a dispatcher token")
    return principal


async def require_driver(driver_id: str, request: Request) -> Principal:
    """For routes with a ``{driver_id}`` path parameter: that driver's own token, or a dispatcher's."""
    principal = await authenticated(request)
    if not principal.may_act_for(driver_id):
        raise AuthError(403, "forbidden", f"this token may not act for driver {driver_id!r}", loc=["path", "driver_id"])
    return principal


def check_driver(principal: Principal, driver_id: str, loc: list[str]) -> None:
    """Refuse a driver token acting for another driver id named in the body."""
    if not principal.may_act_for(driver_id):
        raise AuthError(403, "forbidden", f"this token may not act for driver {driver_id!r}", loc=loc)


Caller = Annotated[Principal, Depends(authenticated)]
"""A handler parameter: the authenticated caller, whatever the role."""
