"""The FastAPI application: health, readiness and the OSRM-compatible services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from routing_api import admin_api, driver_api, osrm, osrm_match, osrm_trip
from routing_api.admin import page as admin_page
from routing_api.auth import AuthError, require_dispatcher
from routing_api.bootstrap import Container, bootstrap, start_serving, stop_serving, use_model
from routing_api.limits import BodySizeLimit
from routing_api.request_log import PersistenceUnavailable
from routing_api.settings import Settings

log = logging.getLogger(__name__)


class ModelActivate(BaseModel):
    checkpoint: str | None = Field(None, description="Checkpoint file; default: the committed model")
    backend: str | None = Field(None, description="auto, torch, onnxruntime, onnxruntime-int8 or tensorrt")


_OSRM_PREFIXES = ("/route/", "/table/", "/nearest/", "/trip/", "/match/", "/tile/")
TRAFFIC_POLL_S = 5.0


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """An app over ``container`` (tests pass their own) or one bootstrapped from settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        c = container or bootstrap(settings or Settings())
        app.state.container = c
        await start_serving(c)
        poller = asyncio.create_task(_poll_traffic(c))
        try:
            yield
        finally:
            poller.cancel()
            await stop_serving(c)
            if owned:
                c.close()

    app = FastAPI(title="Routing service", version="0.1.0", lifespan=lifespan,
                  description="Road routing on OSM maps: OSRM-compatible services and route optimisation.")  # fmt: skip
    dispatcher_only = [Depends(require_dispatcher)]
    app.include_router(osrm.router, dependencies=dispatcher_only)
    app.include_router(osrm_trip.router, dependencies=dispatcher_only)
    app.include_router(osrm_match.router, dependencies=dispatcher_only)
    app.include_router(driver_api.router)
    app.include_router(admin_api.router)
    app.include_router(admin_page.router)
    max_body = (container.settings if container is not None else settings or Settings()).max_body_bytes
    app.add_middleware(BodySizeLimit, max_bytes=max_body,  # type: ignore[arg-type]
                       on_reject=lambda: app.state.container.metrics.errors.labels(kind="body_too_large").inc())  # fmt: skip

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: map, warmed model, database, cache and broker answer")
    async def readyz(request: Request) -> Any:
        """200 "ready"; 200 "degraded" while routes are still served but the database (request log
        and positions are buffered, see ``RequestLog``) or the cache is unreachable; 503 "not ready"
        without a map, a warm model or the queue."""
        c: Container = request.app.state.container
        checks: dict[str, Any] = {}

        def db_ok() -> str:
            try:
                with c.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return "ok"
            except Exception as exc:  # any driver error: unreachable for us
                log.debug("readiness: database check failed: %r", exc)
                return "unreachable"

        checks["database"] = await asyncio.to_thread(db_ok)
        persisted = c.request_log.stats()
        checks["persistence"] = {k: persisted[k] for k in ("state", "buffered", "dropped")}
        checks["cache"] = "ok" if await asyncio.to_thread(c.cache.ping) else "unreachable"
        checks["queue"] = "ok" if await c.queue.ping() else "unreachable"
        checks["model"] = {"backend": c.model.name, "version": c.model.version, "warmed": c.model_ready}
        if c.graph.ready:
            snap = c.graph.snapshot
            checks["map"] = {"id": snap.graph.map_version, "name": snap.graph.name,
                             "nodes": snap.graph.node_count, "traffic_epoch": snap.epoch,
                             "bbox": [round(v, 6) for v in snap.graph.bbox]}  # fmt: skip
        else:
            checks["map"] = "not loaded"
        serving = c.graph.ready and c.model_ready and checks["queue"] == "ok"
        degraded = [name for name in ("database", "cache") if checks[name] != "ok"]
        if persisted["state"] != "ok" and "database" not in degraded:
            degraded.append("database")
        status = "not ready" if not serving else "degraded" if degraded else "ready"
        return osrm.osrm_json({"status": status, "degraded": degraded, "checks": checks}, 200 if serving else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        c: Container = request.app.state.container
        if not c.settings.metrics_public:
            await require_dispatcher(request)
        return Response(c.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/cache/flush", tags=["admin"], summary="Drop every cached route", dependencies=dispatcher_only)
    def flush_cache(request: Request) -> Any:
        c: Container = request.app.state.container
        return osrm.osrm_json({"flushed": c.cache.flush()})

    @app.post("/v1/admin/model", tags=["admin"], summary="Load, warm and switch to another model (hot swap)",
              dependencies=dispatcher_only)  # fmt: skip
    async def activate_model(body: ModelActivate, request: Request) -> Any:
        from pathlib import Path

        from routing_api.model_service import load_model

        c: Container = request.app.state.container
        if c.solver is None:
            return osrm.osrm_json({"detail": [{"msg": "services mode: restart the workers with the new model"}]}, 409)
        checkpoint = Path(body.checkpoint) if body.checkpoint else None
        if checkpoint is not None and not checkpoint.is_file():
            return osrm.osrm_json({"detail": [{"loc": ["body", "checkpoint"], "msg": "file not found",
                                               "type": "value_error"}]}, 422)  # fmt: skip
        name = body.backend or c.settings.model_backend
        if name not in ("auto", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt", "none"):
            return osrm.osrm_json({"detail": [{"loc": ["body", "backend"], "msg": f"unknown backend {name!r}",
                                               "type": "value_error"}]}, 422)  # fmt: skip
        model_dir = Path(c.settings.model_dir) / ("swap-" + (checkpoint.stem if checkpoint else "default"))
        # Built and warmed aside; requests keep using the old model until the swap.
        model = await asyncio.to_thread(load_model, name, model_dir, checkpoint, c.settings.model_threads)
        use_model(c, model)
        return osrm.osrm_json({"backend": model.name, "version": model.version})

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> Any:
        resp = osrm.osrm_json(exc.body(), exc.status)
        resp.headers.update(exc.headers())
        return resp

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if request.url.path.startswith(_OSRM_PREFIXES):
            code = "InvalidService" if exc.status_code == 404 else "InvalidUrl"
            return osrm.error_response(osrm.OsrmError(code, f"URL string malformed: {request.url.path}", 400))
        return osrm.osrm_json({"detail": exc.detail}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        if request.url.path.startswith(_OSRM_PREFIXES):
            return osrm.error_response(osrm.OsrmError("InvalidQuery", "Query string malformed"))
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return osrm.osrm_json({"detail": errors}, 422)

    @app.exception_handler(PersistenceUnavailable)
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, exc: Exception) -> Any:
        # A read that needs the database while it is down: retry later, not a server bug.
        log.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        resp = osrm.osrm_json({"detail": [{"kind": "database_unavailable",
                                           "msg": "the database is unreachable; retry shortly"}]}, 503)  # fmt: skip
        resp.headers["Retry-After"] = str(PersistenceUnavailable.retry_after_s)
        return resp

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.url.path)
        return osrm.osrm_json({"code": "InternalError", "message": "internal error; see the service log"}, 500)

    return app


async def _poll_traffic(container: Container) -> None:
    """Pick up traffic epochs bumped by other processes sharing the database."""
    while True:
        await asyncio.sleep(TRAFFIC_POLL_S)
        if container.graph.ready:
            try:
                await asyncio.to_thread(container.graph.refresh)
            except Exception:  # a database blip must not kill the poller
                log.warning("traffic refresh failed", exc_info=True)
