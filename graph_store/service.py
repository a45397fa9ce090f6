"""The road graph a process routes on: loaded from SQL, swapped atomically on traffic updates."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from graph_store.repository import MapInfo, MapRepository
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import LiveObservation, ProfileEntry

log = logging.getLogger(__name__)


class NoActiveMap(RuntimeError):
    """No map has been imported (run `routing import-map`)."""


class RoadGraphService:
    """Holds the active map's graph and the current traffic snapshot.

    Readers take ``snapshot`` (one attribute read) and use it for a whole request;
    an update builds the next snapshot aside, warms it, then swaps the reference, so
    a query never waits for an update and never sees a mix of two epochs.
    """

    def __init__(self, repository: MapRepository) -> None:
        self.repository = repository
        self._snapshot: RoutingSnapshot | None = None
        self._map: MapInfo | None = None
        self._update_lock = threading.Lock()

    @property
    def snapshot(self) -> RoutingSnapshot:
        snap = self._snapshot
        if snap is None:
            raise NoActiveMap("no active map: run `routing import-map` first")
        return snap

    @property
    def map(self) -> MapInfo:
        if self._map is None:
            raise NoActiveMap("no active map: run `routing import-map` first")
        return self._map

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def load_active(self) -> MapInfo:
        """Build the graph of the active map and its current traffic."""
        info = self.repository.active_map()
        if info is None:
            raise NoActiveMap("no active map: run `routing import-map` first")
        network = self.repository.load_network(info.id)
        graph = RoadGraph(network, map_version=info.id, name=info.name)
        snapshot = RoutingSnapshot(graph, self.repository.load_traffic(info.id))
        snapshot.edge_weights_ms(datetime.now(UTC))  # warm the current bucket
        with self._update_lock:
            self._snapshot, self._map = snapshot, info
        log.info("map %s (id %d): %d nodes, %d edges, traffic epoch %d",
                 info.name, info.id, info.node_count, info.edge_count, snapshot.epoch)  # fmt: skip
        return info

    def _swap_traffic(self) -> RoutingSnapshot:
        current = self.snapshot
        traffic = self.repository.load_traffic(current.graph.map_version)
        if traffic.epoch == current.epoch:
            return current
        nxt = RoutingSnapshot(current.graph, traffic)
        nxt.edge_weights_ms(datetime.now(UTC))
        self._snapshot = nxt
        return nxt

    def add_observations(self, observations: Iterable[LiveObservation], source: str = "api") -> int:
        """Store live speeds, bump the epoch and swap in the new snapshot; returns the epoch."""
        obs = list(observations)
        n_edges = self.snapshot.graph.network.edge_count
        for o in obs:
            if not 0 <= o.edge < n_edges:
                raise ValueError(f"edge {o.edge} is not an edge of the active map (0..{n_edges - 1})")
        with self._update_lock:
            self.repository.add_observations(self.map.id, obs, source=source)
            return self._swap_traffic().epoch

    def set_profile(self, entries: Iterable[ProfileEntry]) -> int:
        rows = list(entries)
        with self._update_lock:
            self.repository.set_profile(self.map.id, rows)
            return self._swap_traffic().epoch

    def refresh(self) -> int:
        """Pick up traffic updates written by other processes; returns the current epoch."""
        with self._update_lock:
            return self._swap_traffic().epoch
