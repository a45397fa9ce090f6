"""A real HTTP server for browser tests: uvicorn in a thread over a container the test can reach.

Monolith on a temporary SQLite database with the bundled Helsinki map, the in-memory cache and
the in-process queue: what `make run` starts, on a free port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings

START_TIMEOUT_S = 180.0  # the first start compiles the model into the temporary model dir


@dataclass(frozen=True)
class LiveServer:
    url: str
    container: Container


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(workdir: Path, osm_file: Path, **settings: object) -> Iterator[LiveServer]:
    """Serve the app on 127.0.0.1:<free port> until the block ends."""
    base = {"database_url": f"sqlite:///{workdir / 'routing.sqlite3'}", "redis_url": None, "amqp_url": None,
            "model_dir": str(workdir / "models"), "max_wait_ms": 2.0}  # fmt: skip
    c = bootstrap(Settings(**{**base, **settings}), migrate=True)  # type: ignore[arg-type]
    c.maps.import_map(osm_file)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(container=c), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.1)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", c)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        c.close()
