"""Road maps and traffic in SQL: import, activation, loading, traffic updates."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from graph_store import polyline
from graph_store.learned_profile import LearnedProfile
from graph_store.models import (
    LearnedTravelProfile,
    LiveTrafficObservation,
    MapVersion,
    RoadEdge,
    RoadNode,
    TrafficProfile,
)
from graph_store.osm_import import RoadNetwork, check_map_file, file_checksum, read_osm
from graph_store.traffic import DayType, LiveObservation, ProfileEntry, TrafficState

_CHUNK = 5000
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on and its folder created."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _fk_on(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


@dataclass(frozen=True)
class MapInfo:
    """A map version's row, detached from the session."""

    id: int
    name: str
    source_checksum: str
    node_count: int
    edge_count: int
    bbox: tuple[float, float, float, float]
    traffic_epoch: int
    is_active: bool


@dataclass(frozen=True)
class ImportResult:
    map: MapInfo
    created: bool  # False: this file was imported before
    activated: bool  # True: the active map changed


def _info(row: MapVersion) -> MapInfo:
    return MapInfo(row.id, row.name, row.source_checksum, row.node_count, row.edge_count,
                   (row.min_lat, row.min_lon, row.max_lat, row.max_lon), row.traffic_epoch, row.is_active)  # fmt: skip


def map_name(path: Path) -> str:
    return re.sub(r"(\.osm)?(\.pbf|\.gz|\.bz2)?$", "", path.name) or path.name


def _noop(stage: str, done: int, total: int) -> None:
    return None


class MapRepository:
    """Maps and traffic of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Built profiles by (map, version): an ONNX session and its per-bucket results outlive epochs.
        self._learned: dict[tuple[int, str], LearnedProfile] = {}
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    # -- maps ------------------------------------------------------------------------

    def import_map(self, path: Path, progress: Progress = _noop) -> ImportResult:
        """Import an OSM file and make it the active map, in one transaction.

        Re-importing a file already stored writes nothing (it is only re-activated
        if another map is active). A bad file raises MapImportError before any write.
        """
        check_map_file(path)
        checksum = file_checksum(path)
        with self.sessions.begin() as session:
            existing = session.scalar(select(MapVersion).where(MapVersion.source_checksum == checksum))
            if existing is not None:
                activated = not existing.is_active
                if activated:
                    self._activate(session, existing.id)
                    existing.is_active = True
                return ImportResult(_info(existing), created=False, activated=activated)
        progress("parse", 0, 1)
        network = read_osm(path)
        progress("parse", 1, 1)
        with self.sessions.begin() as session:
            lat0, lon0, lat1, lon1 = network.bbox()
            row = MapVersion(
                name=map_name(path), source_checksum=checksum, source_path=str(path),
                node_count=network.node_count, edge_count=network.edge_count,
                min_lat=lat0, min_lon=lon0, max_lat=lat1, max_lon=lon1,
                imported_at=datetime.now(UTC), is_active=False, traffic_epoch=0,
            )  # fmt: skip
            session.add(row)
            session.flush()
            self._write_network(session, row.id, network, progress)
            self._activate(session, row.id)
            row.is_active = True
            return ImportResult(_info(row), created=True, activated=True)

    def _write_network(self, session: Session, map_id: int, net: RoadNetwork, progress: Progress) -> None:
        nodes = [
            {"map_version_id": map_id, "node_index": i, "osm_id": int(o), "lat": float(la), "lon": float(lo)}
            for i, (o, la, lo) in enumerate(
                zip(net.node_osm_id.tolist(), net.node_lat.tolist(), net.node_lon.tolist(), strict=True)
            )
        ]
        edges = []
        # Travel-time features: NULL where the network has none (lanes: also where unknown).
        signals, stops, give_way, crossings, maxspeed_tagged = (
            [None] * net.edge_count if values is None else values.tolist()
            for values in (net.edge_signals, net.edge_stops, net.edge_give_way, net.edge_crossings,
                           net.edge_maxspeed_tagged)
        )  # fmt: skip
        lanes = [None] * net.edge_count if net.edge_lanes is None else [
            None if np.isnan(x) else x for x in net.edge_lanes.tolist()
        ]  # fmt: skip
        for e in range(net.edge_count):
            g_lat, g_lon = net.edge_geometry(e)
            edges.append({
                "map_version_id": map_id, "edge_index": e,
                "source_node": int(net.edge_source[e]), "target_node": int(net.edge_target[e]),
                "osm_way_id": int(net.edge_way_id[e]), "length_m": float(net.edge_length_m[e]),
                "speed_kph": float(net.edge_speed_kph[e]), "road_class": str(net.edge_road_class[e]),
                "oneway": bool(net.edge_oneway[e]), "geometry": polyline.encode(g_lat, g_lon, 6),
                "signals": signals[e], "stops": stops[e], "give_way": give_way[e], "crossings": crossings[e],
                "lanes": lanes[e], "maxspeed_tagged": maxspeed_tagged[e],
            })  # fmt: skip
        total = len(nodes) + len(edges)
        done = 0
        for table, rows in ((RoadNode, nodes), (RoadEdge, edges)):
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                session.execute(insert(table), chunk)
                done += len(chunk)
                progress("write", done, total)

    @staticmethod
    def _activate(session: Session, map_id: int) -> None:
        session.execute(update(MapVersion).where(MapVersion.id != map_id).values(is_active=False))
        session.execute(update(MapVersion).where(MapVersion.id == map_id).values(is_active=True))

    def activate(self, map_id: int) -> MapInfo:
        with self.sessions.begin() as session:
            row = session.get(MapVersion, map_id)
            if row is None:
                raise LookupError(f"no map version {map_id}")
            self._activate(session, map_id)
            row.is_active = True
            return _info(row)

    def active_map(self) -> MapInfo | None:
        with self.sessions() as session:
            row = session.scalar(select(MapVersion).where(MapVersion.is_active.is_(True)))
            return _info(row) if row is not None else None

    def list_maps(self) -> list[MapInfo]:
        with self.sessions() as session:
            return [_info(r) for r in session.scalars(select(MapVersion).order_by(MapVersion.id))]

    def load_network(self, map_id: int) -> RoadNetwork:
        """The stored network of a map version, as imported."""
        with self.sessions() as session:
            nodes = session.execute(
                select(RoadNode.osm_id, RoadNode.lat, RoadNode.lon)
                .where(RoadNode.map_version_id == map_id).order_by(RoadNode.node_index)
            ).all()  # fmt: skip
            edges = session.execute(
                select(RoadEdge.source_node, RoadEdge.target_node, RoadEdge.osm_way_id, RoadEdge.length_m,
                       RoadEdge.speed_kph, RoadEdge.road_class, RoadEdge.oneway, RoadEdge.geometry,
                       RoadEdge.signals, RoadEdge.stops, RoadEdge.give_way, RoadEdge.crossings,
                       RoadEdge.lanes, RoadEdge.maxspeed_tagged)
                .where(RoadEdge.map_version_id == map_id).order_by(RoadEdge.edge_index)
            ).all()  # fmt: skip
        if not nodes or not edges:
            raise LookupError(f"map version {map_id} has no stored roads")
        cols = list(zip(*edges, strict=True))
        geoms = [polyline.decode(text, 6) for text in cols[7]]
        offsets = np.concatenate(([0], np.cumsum([g[0].size for g in geoms]))).astype(np.int64)
        node_cols = list(zip(*nodes, strict=True))
        # Maps imported before revision 0004 have NULL features: the fields stay None.
        stored = cols[8][0] is not None
        return RoadNetwork(
            node_osm_id=np.asarray(node_cols[0], dtype=np.int64),
            node_lat=np.asarray(node_cols[1], dtype=np.float64),
            node_lon=np.asarray(node_cols[2], dtype=np.float64),
            edge_source=np.asarray(cols[0], dtype=np.int32),
            edge_target=np.asarray(cols[1], dtype=np.int32),
            edge_way_id=np.asarray(cols[2], dtype=np.int64),
            edge_length_m=np.asarray(cols[3], dtype=np.float64),
            edge_speed_kph=np.asarray(cols[4], dtype=np.float64),
            edge_road_class=np.asarray(cols[5], dtype=object),
            edge_oneway=np.asarray(cols[6], dtype=bool),
            geom_offsets=offsets,
            geom_lat=np.concatenate([g[0] for g in geoms]),
            geom_lon=np.concatenate([g[1] for g in geoms]),
            edge_signals=_counts(cols[8]) if stored else None,
            edge_stops=_counts(cols[9]) if stored else None,
            edge_give_way=_counts(cols[10]) if stored else None,
            edge_crossings=_counts(cols[11]) if stored else None,
            edge_lanes=np.asarray([np.nan if x is None else x for x in cols[12]], dtype=np.float32) if stored else None,
            edge_maxspeed_tagged=np.asarray([bool(x) for x in cols[13]], dtype=bool) if stored else None,
        )

    def counts(self) -> dict[str, int]:
        """Row counts of every graph table (for checks that nothing was written)."""
        with self.sessions() as session:
            return {
                model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
                for model in (MapVersion, RoadNode, RoadEdge, TrafficProfile, LiveTrafficObservation)
            }

    # -- traffic ---------------------------------------------------------------------

    def load_traffic(self, map_id: int, now: datetime | None = None) -> TrafficState:
        """Traffic of a map: its epoch, profile and the observations not yet expired."""
        now = _utc(now or datetime.now(UTC))
        with self.sessions() as session:
            row = session.get(MapVersion, map_id)
            if row is None:
                raise LookupError(f"no map version {map_id}")
            profile = tuple(
                ProfileEntry(DayType.parse(p.day_type), p.bucket, p.speed_factor, p.road_class, p.edge_index)
                for p in session.scalars(
                    select(TrafficProfile).where(TrafficProfile.map_version_id == map_id).order_by(TrafficProfile.id)
                )
            )
            live = tuple(
                LiveObservation(o.edge_index, o.speed_kph, _aware(o.observed_at), _aware(o.expires_at))
                for o in session.scalars(
                    select(LiveTrafficObservation)
                    .where(LiveTrafficObservation.map_version_id == map_id, LiveTrafficObservation.expires_at > now)
                    .order_by(LiveTrafficObservation.id)
                )
            )
            learned_row = session.scalars(
                select(LearnedTravelProfile).where(
                    LearnedTravelProfile.map_version_id == map_id, LearnedTravelProfile.is_active.is_(True)
                )
            ).first()
            learned = None if learned_row is None else self._built_profile(learned_row, row.edge_count)
            return TrafficState(epoch=row.traffic_epoch, profile=profile, live=live, learned=learned)

    def _built_profile(self, row: LearnedTravelProfile, edge_count: int) -> LearnedProfile:
        key = (row.map_version_id, row.version)
        hit = self._learned.get(key)
        if hit is None:
            hit = LearnedProfile(row.version, row.onnx_model, edge_count, row.timezone, json.loads(row.metrics_json))
            self._learned = {key: hit}  # the one in force; an older one is dropped
        return hit

    def save_learned_profile(self, map_id: int, version: str, onnx_model: bytes, metrics: dict[str, Any], *,
                             source: str, timezone: str | None, activate: bool = True) -> int:  # fmt: skip
        """Store a learned profile (the same version again is kept once) and, with ``activate``, make
        it the one in force: the traffic epoch moves on, so every process picks it up. Returns the epoch."""
        with self.sessions.begin() as session:
            row = session.get(MapVersion, map_id)
            if row is None:
                raise LookupError(f"no map version {map_id}")
            existing = session.scalars(
                select(LearnedTravelProfile).where(
                    LearnedTravelProfile.map_version_id == map_id, LearnedTravelProfile.version == version
                )
            ).first()
            if existing is None:
                session.add(LearnedTravelProfile(
                    map_version_id=map_id, version=version, created_at=datetime.now(UTC), source=source,
                    timezone=timezone, onnx_model=onnx_model, metrics_json=json.dumps(metrics), is_active=False,
                ))  # fmt: skip
                session.flush()
            if not activate:
                return row.traffic_epoch
            return self._activate_learned(session, map_id, version)

    def activate_learned_profile(self, map_id: int, version: str | None) -> int:
        """Put a stored profile in force (``None``: none, back to the base model); returns the epoch."""
        with self.sessions.begin() as session:
            if (
                version is not None
                and session.scalars(
                    select(LearnedTravelProfile.id).where(
                        LearnedTravelProfile.map_version_id == map_id, LearnedTravelProfile.version == version
                    )
                ).first()
                is None
            ):
                raise LookupError(f"no learned profile {version!r} for map {map_id}")
            return self._activate_learned(session, map_id, version)

    def _activate_learned(self, session: Session, map_id: int, version: str | None) -> int:
        session.execute(
            update(LearnedTravelProfile)
            .where(LearnedTravelProfile.map_version_id == map_id)
            .values(is_active=LearnedTravelProfile.version == version if version is not None else False)
        )
        return self._bump_epoch(session, map_id)

    def learned_profiles(self, map_id: int) -> list[dict[str, Any]]:
        """Stored profiles of a map, newest first: version, created_at, source, active, metrics."""
        with self.sessions() as session:
            rows = session.execute(
                select(LearnedTravelProfile.version, LearnedTravelProfile.created_at, LearnedTravelProfile.source,
                       LearnedTravelProfile.is_active, LearnedTravelProfile.metrics_json, LearnedTravelProfile.timezone)
                .where(LearnedTravelProfile.map_version_id == map_id)
                .order_by(LearnedTravelProfile.id.desc())
            ).all()  # fmt: skip
        return [{"version": r[0], "created_at": _aware(r[1]).isoformat(), "source": r[2], "active": bool(r[3]),
                 "metrics": json.loads(r[4]), "timezone": r[5]} for r in rows]  # fmt: skip

    def add_observations(self, map_id: int, observations: Iterable[LiveObservation], source: str = "api") -> int:
        """Store live observations and bump the traffic epoch; returns the new epoch."""
        obs = list(observations)
        with self.sessions.begin() as session:
            epoch = self._bump_epoch(session, map_id)
            if obs:
                session.execute(insert(LiveTrafficObservation), [
                    {"map_version_id": map_id, "edge_index": o.edge, "speed_kph": o.speed_kph,
                     "observed_at": _utc(o.observed_at), "expires_at": _utc(o.expires_at), "source": source,
                     "traffic_epoch": epoch}
                    for o in obs
                ])  # fmt: skip
            return epoch

    def set_profile(self, map_id: int, entries: Iterable[ProfileEntry]) -> int:
        """Replace a map's speed profile and bump the traffic epoch; returns the new epoch."""
        rows = list(entries)
        with self.sessions.begin() as session:
            epoch = self._bump_epoch(session, map_id)
            session.query(TrafficProfile).filter(TrafficProfile.map_version_id == map_id).delete()
            if rows:
                session.execute(insert(TrafficProfile), [
                    {"map_version_id": map_id, "road_class": p.road_class, "edge_index": p.edge,
                     "day_type": p.day_type.name.lower(), "bucket": p.bucket, "speed_factor": p.speed_factor}
                    for p in rows
                ])  # fmt: skip
            return epoch

    @staticmethod
    def _bump_epoch(session: Session, map_id: int) -> int:
        # One UPDATE ... SET epoch = epoch + 1: concurrent updaters each get their own epoch.
        result = session.execute(
            update(MapVersion).where(MapVersion.id == map_id)
            .values(traffic_epoch=MapVersion.traffic_epoch + 1).returning(MapVersion.traffic_epoch)
        ).scalar()  # fmt: skip
        if result is None:
            raise LookupError(f"no map version {map_id}")
        return int(result)


def _counts(values: Iterable[int | None]) -> np.ndarray:
    return np.asarray([x or 0 for x in values], dtype=np.int16)


def _utc(when: datetime) -> datetime:
    # SQLite keeps a datetime's wall clock and drops its offset: store and compare in UTC.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _aware(when: datetime) -> datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were stored as UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
