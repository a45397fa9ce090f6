"""Bearer-token headers for tests that talk to the API (auth is on by default)."""

from __future__ import annotations

from typing import Any


def dispatcher_headers(container: Any) -> dict[str, str]:
    """A fresh, unlimited dispatcher token of ``container``'s database, as request headers."""
    return bearer(container.tokens.create("dispatcher", name="tests", rate_per_s=0))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
