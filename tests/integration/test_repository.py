"""The SQL store on SQLite and on real PostgreSQL: import, activation, loading, traffic, migrations."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect

import migrations
from graph_store.osm_import import MapImportError, RoadNetwork
from graph_store.repository import MapRepository, make_engine
from graph_store.traffic import DayType, LiveObservation, ProfileEntry
from tests.synthetic_osm import grid_node, write_osm

GRAPH_TABLES = {"map_versions", "road_nodes", "road_edges", "traffic_profiles", "live_traffic_observations"}


@pytest.fixture(scope="module")
def west_oakland_path(road_networks: Path) -> Path:
    return road_networks / "west_oakland.osm.bz2"


def test_import_makes_the_active_map(repository: MapRepository, helsinki_path: Path,
                                     helsinki_network: RoadNetwork) -> None:  # fmt: skip
    assert repository.active_map() is None
    result = repository.import_map(helsinki_path)
    assert result.created and result.activated
    info = result.map
    assert info.is_active
    assert info.name == "Helsinki"
    assert info.node_count == helsinki_network.node_count
    assert info.edge_count == helsinki_network.edge_count
    assert info.bbox == pytest.approx(helsinki_network.bbox())
    assert info.traffic_epoch == 0
    assert len(info.source_checksum) == 64
    active = repository.active_map()
    assert active is not None and active.id == info.id and active.is_active
    assert repository.counts() == {
        "map_versions": 1,
        "road_nodes": helsinki_network.node_count,
        "road_edges": helsinki_network.edge_count,
        "traffic_profiles": 0,
        "live_traffic_observations": 0,
    }


def test_reimport_writes_nothing(repository: MapRepository, helsinki_path: Path, tmp_path: Path) -> None:
    first = repository.import_map(helsinki_path)
    before = repository.counts()
    again = repository.import_map(helsinki_path)
    assert not again.created and not again.activated
    assert again.map.id == first.map.id
    assert repository.counts() == before
    # The same bytes under another name are the same map.
    copy = shutil.copy(helsinki_path, tmp_path / "helsinki_copy.osm.pbf")
    third = repository.import_map(Path(copy))
    assert not third.created and third.map.id == first.map.id
    assert repository.counts() == before


def test_reimport_reactivates_an_older_map(repository: MapRepository, helsinki_path: Path,
                                           west_oakland_path: Path) -> None:  # fmt: skip
    helsinki = repository.import_map(helsinki_path).map
    oakland = repository.import_map(west_oakland_path)
    assert oakland.created and oakland.activated
    assert oakland.map.name == "west_oakland"
    assert repository.active_map().id == oakland.map.id  # type: ignore[union-attr]
    counts = repository.counts()
    assert counts["map_versions"] == 2
    assert counts["road_nodes"] == helsinki.node_count + oakland.map.node_count

    back = repository.import_map(helsinki_path)
    assert not back.created and back.activated
    assert back.map.id == helsinki.id and back.map.is_active
    assert repository.active_map().id == helsinki.id  # type: ignore[union-attr]
    assert repository.counts() == counts
    maps = repository.list_maps()
    assert [m.id for m in maps] == sorted([helsinki.id, oakland.map.id])
    assert [m.is_active for m in maps] == [True, False]


def test_activate_by_id(repository: MapRepository, helsinki_path: Path, west_oakland_path: Path) -> None:
    helsinki = repository.import_map(helsinki_path).map
    repository.import_map(west_oakland_path)
    info = repository.activate(helsinki.id)
    assert info.id == helsinki.id and info.is_active
    assert sum(m.is_active for m in repository.list_maps()) == 1
    assert repository.active_map().id == helsinki.id  # type: ignore[union-attr]
    with pytest.raises(LookupError):
        repository.activate(helsinki.id + 100)


def _bad_file(kind: str, tmp_path: Path, helsinki_path: Path) -> Path:
    if kind == "empty":
        path = tmp_path / "empty.osm.pbf"
        path.write_bytes(b"")
    elif kind == "truncated":
        path = tmp_path / "truncated.osm.pbf"
        path.write_bytes(helsinki_path.read_bytes()[:5000])
    elif kind == "roadless":
        nodes = {1: grid_node(0, 0), 2: grid_node(0, 1), 3: grid_node(1, 1)}
        ways = [(1, [1, 2], {"highway": "footway"}), (2, [2, 3], {"building": "yes"})]
        path = write_osm(tmp_path / "roadless.osm", nodes, ways)
    elif kind == "missing":
        path = tmp_path / "missing.osm.pbf"
    elif kind == "suffix":
        path = tmp_path / "helsinki.pdf"
        shutil.copy(helsinki_path, path)
    else:
        raise AssertionError(kind)
    return path


BAD_KINDS = ["empty", "truncated", "roadless", "missing", "suffix"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_into_empty_database(repository: MapRepository, helsinki_path: Path, tmp_path: Path,
                                      kind: str) -> None:  # fmt: skip
    path = _bad_file(kind, tmp_path, helsinki_path)
    before = repository.counts()
    with pytest.raises(MapImportError):
        repository.import_map(path)
    assert repository.counts() == before
    assert repository.active_map() is None


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_leaves_the_active_map(repository: MapRepository, helsinki_path: Path, west_oakland_path: Path,
                                        tmp_path: Path, kind: str) -> None:  # fmt: skip
    active = repository.import_map(west_oakland_path).map
    path = _bad_file(kind, tmp_path, helsinki_path)
    before = repository.counts()
    with pytest.raises(MapImportError):
        repository.import_map(path)
    assert repository.counts() == before
    assert repository.active_map().id == active.id  # type: ignore[union-attr]


def test_load_network_roundtrip(repository: MapRepository, helsinki_path: Path,
                                helsinki_network: RoadNetwork) -> None:  # fmt: skip
    info = repository.import_map(helsinki_path).map
    loaded = repository.load_network(info.id)
    net = helsinki_network
    for name in ("node_osm_id", "edge_source", "edge_target", "edge_way_id", "edge_oneway", "geom_offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(net, name), err_msg=name)
    assert loaded.edge_road_class.tolist() == net.edge_road_class.tolist()
    for name in ("node_lat", "node_lon", "edge_length_m", "edge_speed_kph"):
        np.testing.assert_allclose(getattr(loaded, name), getattr(net, name), rtol=1e-12, atol=0, err_msg=name)
    assert np.max(np.abs(loaded.geom_lat - net.geom_lat)) <= 1e-6
    assert np.max(np.abs(loaded.geom_lon - net.geom_lon)) <= 1e-6
    assert loaded.edge_source.dtype == net.edge_source.dtype
    assert loaded.edge_speed_kph.dtype == np.float64


def test_load_network_of_unknown_map(repository: MapRepository) -> None:
    with pytest.raises(LookupError):
        repository.load_network(12345)


def test_observations_bump_epoch_and_load(repository: MapRepository, west_oakland_path: Path) -> None:
    info = repository.import_map(west_oakland_path).map
    now = datetime.now(UTC).replace(microsecond=0)
    first = LiveObservation(1, 12.5, now, now + timedelta(minutes=15))
    second = LiveObservation(4, 7.0, now, now + timedelta(minutes=30))
    assert repository.add_observations(info.id, [first]) == 1
    assert repository.add_observations(info.id, [second], source="probe") == 2
    assert repository.active_map().traffic_epoch == 2  # type: ignore[union-attr]
    state = repository.load_traffic(info.id, now=now)
    assert state.epoch == 2
    assert state.live == (first, second)
    assert state.profile == ()
    assert repository.counts()["live_traffic_observations"] == 2


def test_profile_replaces_and_bumps_epoch(repository: MapRepository, west_oakland_path: Path) -> None:
    info = repository.import_map(west_oakland_path).map
    entries = (
        ProfileEntry(DayType.WEEKDAY, 34, 0.5, road_class="secondary"),
        ProfileEntry(DayType.WEEKEND, 95, 1.25, edge=3),
    )
    assert repository.set_profile(info.id, entries) == 1
    state = repository.load_traffic(info.id)
    assert state.epoch == 1 and state.profile == entries
    replacement = (ProfileEntry(DayType.WEEKDAY, 0, 0.8, road_class="residential"),)
    assert repository.set_profile(info.id, replacement) == 2
    state = repository.load_traffic(info.id)
    assert state.epoch == 2 and state.profile == replacement
    assert repository.counts()["traffic_profiles"] == 1
    assert repository.set_profile(info.id, []) == 3
    assert repository.load_traffic(info.id).profile == ()


def test_expired_observations_are_not_loaded(repository: MapRepository, west_oakland_path: Path) -> None:
    info = repository.import_map(west_oakland_path).map
    t0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    short = LiveObservation(1, 10.0, t0, t0 + timedelta(minutes=5))
    long = LiveObservation(2, 20.0, t0, t0 + timedelta(minutes=60))
    repository.add_observations(info.id, [short, long])
    assert repository.load_traffic(info.id, now=t0 + timedelta(minutes=1)).live == (short, long)
    assert repository.load_traffic(info.id, now=t0 + timedelta(minutes=5)).live == (long,)
    assert repository.load_traffic(info.id, now=t0 + timedelta(minutes=61)).live == ()
    # Observations long expired in real time are not loaded by default.
    assert repository.load_traffic(info.id).live == ()


def test_observation_times_keep_their_instant_across_offsets(repository: MapRepository,
                                                             west_oakland_path: Path) -> None:  # fmt: skip
    info = repository.import_map(west_oakland_path).map
    plus5 = timezone(timedelta(hours=5))
    observed = datetime(2026, 11, 30, 13, 0, tzinfo=plus5)  # 08:00 UTC
    obs = LiveObservation(3, 15.0, observed, observed + timedelta(minutes=10))
    repository.add_observations(info.id, [obs])
    (loaded,) = repository.load_traffic(info.id, now=datetime(2026, 11, 30, 8, 5, tzinfo=UTC)).live
    assert loaded.observed_at == obs.observed_at and loaded.expires_at == obs.expires_at
    # Expired at 08:10 UTC, whatever the clock the question is asked on.
    assert repository.load_traffic(info.id, now=datetime(2026, 11, 30, 8, 11, tzinfo=UTC)).live == ()
    assert (
        repository.load_traffic(info.id, now=datetime(2026, 11, 30, 3, 11, tzinfo=timezone(timedelta(hours=-5)))).live
        == ()
    )
    assert (
        len(
            repository.load_traffic(
                info.id, now=datetime(2026, 11, 30, 10, 9, tzinfo=timezone(timedelta(hours=2)))
            ).live
        )
        == 1
    )


def test_traffic_belongs_to_its_map(repository: MapRepository, helsinki_path: Path, west_oakland_path: Path) -> None:
    helsinki = repository.import_map(helsinki_path).map
    oakland = repository.import_map(west_oakland_path).map
    now = datetime.now(UTC)
    repository.add_observations(oakland.id, [LiveObservation(0, 9.0, now, now + timedelta(hours=1))])
    repository.set_profile(oakland.id, [ProfileEntry(DayType.WEEKDAY, 1, 0.5, edge=0)])
    assert repository.load_traffic(helsinki.id).epoch == 0
    assert repository.load_traffic(helsinki.id).live == ()
    assert repository.load_traffic(helsinki.id).profile == ()
    assert repository.load_traffic(oakland.id).epoch == 2


def test_traffic_of_unknown_map(repository: MapRepository) -> None:
    now = datetime.now(UTC)
    with pytest.raises(LookupError):
        repository.add_observations(99, [LiveObservation(0, 9.0, now, now + timedelta(hours=1))])
    with pytest.raises(LookupError):
        repository.set_profile(99, [])
    with pytest.raises(LookupError):
        repository.load_traffic(99)
    assert repository.counts()["live_traffic_observations"] == 0


def test_migrations_downgrade_and_upgrade_again(database_url: str, west_oakland_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        migrations.upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= GRAPH_TABLES
        MapRepository(engine).import_map(west_oakland_path)
        migrations.downgrade(engine, "base")
        assert not GRAPH_TABLES & set(inspect(engine).get_table_names())
        migrations.upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= GRAPH_TABLES
        repo = MapRepository(engine)
        assert repo.counts() == dict.fromkeys(GRAPH_TABLES, 0)
        result = repo.import_map(west_oakland_path)
        assert result.created and repo.active_map() is not None
        # Upgrading an up-to-date database is a no-op.
        migrations.upgrade(engine)
        assert repo.counts()["map_versions"] == 1
    finally:
        engine.dispose()
