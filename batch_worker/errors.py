"""Why a solve request got no answer. The API maps each to an HTTP status.

* ``QueueFull`` -> 503 with ``Retry-After``: too many requests wait already (backpressure);
* ``QueueUnavailable`` -> 503 with ``Retry-After``: the broker (or the batcher) is down;
* ``DeadlineExceeded`` -> 504: the request's deadline passed before its reply came.
"""

from __future__ import annotations


class QueueFull(RuntimeError):
    """The queue holds its maximum of waiting requests; retry later."""

    retry_after_s: float = 1.0


class QueueUnavailable(RuntimeError):
    """The queue cannot take requests now (broker unreachable, stopped, misconfigured)."""

    retry_after_s: float = 5.0


class DeadlineExceeded(TimeoutError):
    """The request's deadline (Unix time) passed before its reply arrived."""
