"""The composition root: builds each process's adapters from one Settings object.

``bootstrap`` makes the synchronous parts (database, repositories, cache, queue
adapter); ``start_serving``/``stop_serving`` run in the app's lifespan (graph, model,
queue). Monolith: an in-process queue feeding a batcher in this process. Services
(``mode="api"``): RabbitMQ to separate ``routing worker`` processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

import migrations
from batch_worker.batcher import Batcher
from batch_worker.queue import InProcessQueue, RabbitMQQueue, SolveQueue
from batch_worker.solver import BatchSolver
from graph_store.repository import MapRepository, make_engine
from graph_store.service import RoadGraphService
from route_cache import RouteCache, make_cache
from routing_api.auth import RateLimiter, TokenStore
from routing_api.metrics import ServiceMetrics
from routing_api.model_service import LoadedModel, load_model
from routing_api.request_log import RequestLog
from routing_api.route_service import RouteService
from routing_api.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    maps: MapRepository
    graph: RoadGraphService
    request_log: RequestLog = field(init=False)
    tokens: TokenStore = field(init=False)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    metrics: ServiceMetrics = field(init=False)
    cache: RouteCache = field(init=False)
    queue: SolveQueue = field(init=False)
    solver: BatchSolver | None = None
    routes: RouteService = field(init=False)
    model: LoadedModel = field(default_factory=lambda: LoadedModel(None, "none", "none"))
    model_ready: bool = False

    def close(self) -> None:
        self.engine.dispose()


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def bootstrap(settings: Settings, *, migrate: bool = False) -> Container:
    """Build the adapters; with ``migrate`` bring the database schema to head first."""
    engine = make_engine(settings.database_url)
    if migrate:
        migrations.upgrade(engine)
    maps = MapRepository(engine)
    c = Container(settings=settings, engine=engine, maps=maps, graph=RoadGraphService(maps))
    c.request_log = RequestLog(engine)
    c.tokens = TokenStore(engine)
    c.metrics = ServiceMetrics()
    c.metrics.bind_persistence(c.request_log.stats)
    c.cache = make_cache(settings.redis_url, settings.cache_prefix)
    if settings.mode == "api":
        if not settings.amqp_url:
            raise ValueError("ROUTING_AMQP_URL must be set for --mode api")
        c.queue = RabbitMQQueue(settings.amqp_url, settings.queue_name, instance_id())
    else:
        c.solver = BatchSolver(None, worker_id=f"monolith-{instance_id()}")
        batcher = Batcher(c.solver.solve_batch, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                          max_queue=settings.max_queue)  # fmt: skip
        c.queue = InProcessQueue(batcher)
    c.metrics.bind_queue_replies(c.queue.stats)
    c.routes = RouteService(settings, c.graph, c.queue, c.cache, c.request_log, c.metrics)
    return c


def use_model(c: Container, model: LoadedModel) -> None:
    """Switch the served model (the monolith's solver swaps atomically; versions follow)."""
    if c.solver is not None:
        c.solver.swap_backend(model.backend)
    c.model = model
    c.routes.model_version = model.version
    c.routes.backend_name = model.name
    c.metrics.set_backend(model.name, model.version)


async def start_serving(c: Container) -> None:
    from graph_store.service import NoActiveMap

    s = c.settings
    if not c.graph.ready:
        try:
            await asyncio.to_thread(c.graph.load_active)
        except NoActiveMap as exc:
            log.error("%s; /readyz stays 503", exc)
    if c.solver is not None:
        model = await asyncio.to_thread(load_model, s.model_backend, Path(s.model_dir), None, s.model_threads)
    else:  # services mode: workers run the model; the API keys its cache by the same checkpoint
        model = await asyncio.to_thread(_checkpoint_identity)
    use_model(c, model)
    c.model_ready = True
    await c.queue.start()
    c.request_log.start()  # the request log and positions are written off the request path
    stats = getattr(c.queue, "stats", None)
    if callable(stats):
        c.metrics.bind_queue_depth(lambda: float(stats().get("queue_depth", 0)))  # type: ignore[union-attr]


def _checkpoint_identity() -> LoadedModel:
    from routing_api.model_training import CHECKPOINT

    if not CHECKPOINT.is_file():
        return LoadedModel(None, "worker", "none")
    from gnn_model.training import load_checkpoint

    _, meta = load_checkpoint(CHECKPOINT)
    return LoadedModel(None, "worker", str(meta["version"]))


async def stop_serving(c: Container) -> None:
    await c.queue.stop()
    await asyncio.to_thread(c.request_log.close)  # a last write of what is still queued
