"""A tiny local HTTP server standing in for ``POST /v1/routes`` in replay tests: it sleeps, then answers.

Each request body may say how to answer: ``sleep_s`` (default: the server's), ``status`` (default
200) and ``cache`` (echoed as the answer's ``cache`` field). The server records when each request
arrived and the most requests it held at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class SlowServerLog:
    arrivals: list[float] = field(default_factory=list)  # perf_counter at each request's arrival
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def slow_server(sleep_s: float = 0.5) -> Iterator[tuple[str, SlowServerLog]]:
    """(base URL, log) of a threaded server on a free loopback port, stopped on exit."""
    log = SlowServerLog()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.loads(raw or b"{}")
            with log.lock:
                log.arrivals.append(time.perf_counter())
                log.bodies.append(body)
                log.headers.append({k.lower(): v for k, v in self.headers.items()})
                log.in_flight += 1
                log.max_in_flight = max(log.max_in_flight, log.in_flight)
            try:
                time.sleep(float(body.get("sleep_s", sleep_s)))
                status = int(body.get("status", 200))
                if status == 200:
                    answer = {"route_id": "r", "cache": body.get("cache", "miss")}
                else:
                    answer = {"detail": [{"kind": body.get("kind", "test"), "msg": "refused by the test server"}]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                with log.lock:
                    log.in_flight -= 1

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # a burst of connections must not wait for a SYN retry
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
