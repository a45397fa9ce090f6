"""``python -m batch_worker``: one worker process (``routing worker`` calls ``worker_entry`` too).

Parses the command line, loads the model backend, serves until SIGINT/SIGTERM.
Bad arguments exit with status 2 and a message.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pika.exceptions import AMQPChannelError

from batch_worker.amqp import DEFAULT_QUEUE
from batch_worker.solver import BatchSolver
from batch_worker.worker import run_worker
from gnn_model.backends import BACKEND_NAMES, Backend, load_backend

log = logging.getLogger("batch_worker")

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "gnn_model" / "artifacts" / "edge_scorer.pt"
DEFAULT_MODEL_DIR = Path("var") / "models"
BACKEND_CHOICES = ("auto", *BACKEND_NAMES, "none")


class WorkerConfigError(ValueError):
    """The worker cannot start as configured; the message says why."""


def load_worker_backend(backend: str, model_dir: Path, checkpoint: Path, threads: int | None = None) -> Backend | None:
    """The backend to serve with; ``none`` = plain search. ``auto`` falls back to ``none`` (with a
    warning) when no model is available; a named backend that cannot load raises ``WorkerConfigError``."""
    if backend == "none":
        return None
    try:
        return load_backend(backend, model_dir, checkpoint, threads)
    except Exception as exc:  # BackendUnavailable, a missing or corrupt file, a missing package
        if backend == "auto":
            log.warning("no model backend available (%s); serving with the plain search", exc)
            return None
        raise WorkerConfigError(f"backend {backend!r} cannot be loaded: {exc}") from exc


def worker_entry(*, amqp_url: str, queue: str = DEFAULT_QUEUE, backend: str = "auto",
                 model_dir: Path = DEFAULT_MODEL_DIR, checkpoint: Path = DEFAULT_CHECKPOINT, max_batch: int = 32,
                 max_wait_ms: float = 5.0, prefetch: int = 64, worker_id: str | None = None,
                 threads: int | None = None, stop_event: threading.Event | None = None) -> int:  # fmt: skip
    """Load the backend, warm up the search, serve until ``stop_event`` (or SIGINT/SIGTERM). Returns 0.

    Raises ``WorkerConfigError`` for a backend that cannot be loaded.
    """
    from gnn_model.search import warm_up

    wid = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    model = load_worker_backend(backend, model_dir, checkpoint, threads)
    warm_up()  # compile the search kernels now, not inside the first request's budget
    solver = BatchSolver(model, wid)
    stop = stop_event or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    log.info("worker %s: backend %s, batches of up to %d within %.1f ms", wid,
             f"{model.name} {model.version}" if model else "none", max_batch, max_wait_ms)  # fmt: skip
    try:
        run_worker(amqp_url, queue, solver, max_batch=max_batch, max_wait_ms=max_wait_ms, prefetch=prefetch,
                   stop_event=stop)  # fmt: skip
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m batch_worker", description="Serve solve requests from RabbitMQ.")
    p.add_argument("--amqp-url", default=os.environ.get("ROUTING_AMQP_URL"),
                   help="RabbitMQ URL (default: $ROUTING_AMQP_URL)")  # fmt: skip
    p.add_argument("--queue", default=DEFAULT_QUEUE, help=f"request queue name (default {DEFAULT_QUEUE})")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="model backend; none = plain search")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="compiled model artifacts")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint for --backend torch")
    p.add_argument("--max-batch", type=int, default=32, help="most requests in one batch (>= 1)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest the oldest request waits for a batch")
    p.add_argument("--prefetch", type=int, default=64, help="most unacked messages held (>= max-batch)")
    p.add_argument("--worker-id", default=None, help="name in replies (default host-pid)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the library's)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.amqp_url:
        parser.error("--amqp-url is required (or set ROUTING_AMQP_URL)")
    if not args.amqp_url.startswith(("amqp://", "amqps://")):
        parser.error(f"--amqp-url must start with amqp:// or amqps://, got {args.amqp_url!r}")
    if args.max_batch < 1:
        parser.error(f"--max-batch must be >= 1, got {args.max_batch}")
    if not 0 <= args.max_wait_ms < 60_000:
        parser.error(f"--max-wait-ms must be in [0, 60000), got {args.max_wait_ms}")
    if args.prefetch < 1:
        parser.error(f"--prefetch must be >= 1, got {args.prefetch}")
    if args.threads is not None and args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    if not args.queue or len(args.queue.encode()) > 200:
        parser.error("--queue must be 1..200 bytes")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return worker_entry(amqp_url=args.amqp_url, queue=args.queue, backend=args.backend,
                            model_dir=args.model_dir, checkpoint=args.checkpoint, max_batch=args.max_batch,
                            max_wait_ms=args.max_wait_ms, prefetch=args.prefetch, worker_id=args.worker_id,
                            threads=args.threads)  # fmt: skip
    except WorkerConfigError as exc:
        print(f"python -m batch_worker: error: {exc}", file=sys.stderr)
        return 2
    except AMQPChannelError as exc:  # e.g. the broker refuses the queue topology: retrying will not help
        print(f"python -m batch_worker: RabbitMQ refused: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
