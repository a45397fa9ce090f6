"""SQL tables of the road graph store (SQLAlchemy 2). The schema itself is made only
by the Alembic revisions in ``migrations/``; these classes describe it for queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class MapVersion(Base):
    """One imported OSM file. Exactly one row is active at a time (or none before the first import)."""

    __tablename__ = "map_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    source_checksum: Mapped[str] = mapped_column(String(64), unique=True)
    source_path: Mapped[str] = mapped_column(Text)
    node_count: Mapped[int] = mapped_column(Integer)
    edge_count: Mapped[int] = mapped_column(Integer)
    min_lat: Mapped[float] = mapped_column(Float)
    min_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    traffic_epoch: Mapped[int] = mapped_column(Integer, default=0)


class RoadNode(Base):
    __tablename__ = "road_nodes"

    map_version_id: Mapped[int] = mapped_column(ForeignKey("map_versions.id", ondelete="CASCADE"), primary_key=True)
    node_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    osm_id: Mapped[int] = mapped_column(BigInteger)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)


class RoadEdge(Base):
    """A directed road segment between two intersections; a two-way street is two rows."""

    __tablename__ = "road_edges"

    map_version_id: Mapped[int] = mapped_column(ForeignKey("map_versions.id", ondelete="CASCADE"), primary_key=True)
    edge_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_node: Mapped[int] = mapped_column(Integer)
    target_node: Mapped[int] = mapped_column(Integer)
    osm_way_id: Mapped[int] = mapped_column(BigInteger)
    length_m: Mapped[float] = mapped_column(Float)
    speed_kph: Mapped[float] = mapped_column(Float)
    road_class: Mapped[str] = mapped_column(String(32))
    oneway: Mapped[bool] = mapped_column(Boolean)
    geometry: Mapped[str] = mapped_column(Text)  # encoded polyline, precision 6, source to target
    # Travel-time features (revision 0004); NULL for maps imported before it.
    signals: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    stops: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    give_way: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    crossings: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    lanes: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL also: lanes unknown
    maxspeed_tagged: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class TrafficProfile(Base):
    """Speed factor for a road class or one edge in a 15-minute bucket of a weekday or weekend."""

    __tablename__ = "traffic_profiles"
    __table_args__ = (
        CheckConstraint("(road_class IS NULL) <> (edge_index IS NULL)", name="ck_traffic_profiles_target"),
        CheckConstraint("bucket >= 0 AND bucket < 96", name="ck_traffic_profiles_bucket"),
        Index("ix_traffic_profiles_map", "map_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    map_version_id: Mapped[int] = mapped_column(ForeignKey("map_versions.id", ondelete="CASCADE"))
    road_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    edge_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    day_type: Mapped[str] = mapped_column(String(8))  # 'weekday' | 'weekend'
    bucket: Mapped[int] = mapped_column(Integer)
    speed_factor: Mapped[float] = mapped_column(Float)


class LiveTrafficObservation(Base):
    """A measured speed on one directed edge, valid until ``expires_at``."""

    __tablename__ = "live_traffic_observations"
    __table_args__ = (Index("ix_live_traffic_map_expiry", "map_version_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    map_version_id: Mapped[int] = mapped_column(ForeignKey("map_versions.id", ondelete="CASCADE"))
    edge_index: Mapped[int] = mapped_column(Integer)
    speed_kph: Mapped[float] = mapped_column(Float)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(64), default="api")
    traffic_epoch: Mapped[int] = mapped_column(Integer)


class RouteRequestLog(Base):
    """One route request and its answer: the request log that replay reads."""

    __tablename__ = "route_requests"
    __table_args__ = (
        Index("ix_route_requests_driver", "driver_id", "received_at"),
        Index("ix_route_requests_received", "received_at"),
    )

    route_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    driver_id: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_json: Mapped[str] = mapped_column(Text)
    response_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cache: Mapped[str | None] = mapped_column(String(8), nullable=True)
    n_stops: Mapped[int] = mapped_column(Integer)
    total_duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    timings_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    graph_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    traffic_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    backend: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DriverPosition(Base):
    """A GPS ping from a driver app."""

    __tablename__ = "driver_positions"
    __table_args__ = (Index("ix_driver_positions_driver_time", "driver_id", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    driver_id: Mapped[str] = mapped_column(String(128))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    speed_mps: Mapped[float | None] = mapped_column(Float, nullable=True)
    heading_deg: Mapped[float | None] = mapped_column(Float, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token: only its SHA-256 is stored; ``prefix`` names it in listings and logs."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('driver', 'dispatcher')", name="ck_api_tokens_role"),
        CheckConstraint("role = 'dispatcher' OR driver_id IS NOT NULL", name="ck_api_tokens_driver_bound"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    driver_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LearnedTravelProfile(Base):
    """A travel-time profile learned from trips or pings for one map: an ONNX model giving each
    directed edge a time multiplier per moment of the week. At most one per map is active."""

    __tablename__ = "learned_travel_profiles"
    __table_args__ = (
        UniqueConstraint("map_version_id", "version", name="uq_learned_travel_profiles_version"),
        Index("ix_learned_travel_profiles_map", "map_version_id", "is_active"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    map_version_id: Mapped[int] = mapped_column(ForeignKey("map_versions.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))  # 'trips' | 'pings'
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    onnx_model: Mapped[bytes] = mapped_column(LargeBinary)
    metrics_json: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
