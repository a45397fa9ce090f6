"""``BodySizeLimit``: bodies over the limit are refused with 413 before the app reads them,
whether their length is announced (Content-Length) or streamed (chunked)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from routing_api.limits import BodySizeLimit

LIMIT = 1000


@pytest.fixture
def client() -> Iterator[tuple[TestClient, list[int], list[int]]]:
    app = FastAPI()
    seen: list[int] = []  # body sizes the endpoint received
    rejected: list[int] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.append(len(body))
        return {"size": len(body)}

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(BodySizeLimit, max_bytes=LIMIT, on_reject=lambda: rejected.append(1))  # type: ignore[arg-type]
    with TestClient(app) as c:
        yield c, seen, rejected


def _chunks(total: int, size: int = 100) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_a_body_at_the_limit_passes_whole(client) -> None:
    c, seen, rejected = client
    assert c.post("/echo", content=b"x" * LIMIT).json() == {"size": LIMIT}
    assert c.post("/echo", content=_chunks(LIMIT)).json() == {"size": LIMIT}  # streamed: handed on as it came
    assert c.get("/ping").json() == {"ok": "yes"}
    assert seen == [LIMIT, LIMIT] and rejected == []


def test_an_announced_length_over_the_limit_is_refused_unread(client) -> None:
    c, seen, rejected = client
    r = c.post("/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    (detail,) = r.json()["detail"]
    assert detail["kind"] == "body_too_large" and detail["loc"] == ["body"]
    assert f"of {LIMIT + 1} bytes" in detail["msg"] and f"limit is {LIMIT} bytes" in detail["msg"]
    assert seen == [] and rejected == [1]  # the endpoint never ran; the refusal was counted


def test_a_streamed_body_over_the_limit_is_refused_while_it_streams(client) -> None:
    c, seen, rejected = client
    r = c.post("/echo", content=_chunks(50 * LIMIT))
    assert r.status_code == 413 and r.json()["detail"][0]["kind"] == "body_too_large"
    assert f"more than {LIMIT} bytes" in r.json()["detail"][0]["msg"]
    assert seen == [] and rejected == [1]


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BodySizeLimit(FastAPI(), max_bytes=-1)
