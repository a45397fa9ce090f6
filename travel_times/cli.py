"""``routing traffic learn`` and ``routing traffic learned``: learn a travel-time profile for the
active map from a trip file (or driver pings), evaluate it on held-back trips, store it and put
it in force; list and switch stored profiles."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from gnn_model.eta.trips import FORMATS, TripFileError, Trips, read_trips
from graph_store.repository import MapInfo, MapRepository
from graph_store.routing_graph import RoadGraph
from travel_times.dataset import TripPaths

# The clock the trip formats record their times on.
FORMAT_TIMEZONE = {"nyc-kaggle": "America/New_York", "nyc-taxi": "America/New_York"}


class LearnError(ValueError):
    """Bad input or nothing to learn from; the message names what."""


def add_arguments(tsub: Any) -> None:
    learn = tsub.add_parser("learn", help="learn travel times for the active map from trips or driver pings")
    src = learn.add_mutually_exclusive_group(required=True)
    src.add_argument("--trips", help="trip file (CSV, plain or gzipped)")
    src.add_argument("--from-pings", action="store_true", help="learn from the stored driver pings (map-matched)")
    learn.add_argument("--format", choices=FORMATS, help="trip file format (with --trips)")
    learn.add_argument("--since", help="with --from-pings: pings at or after this ISO time")
    learn.add_argument("--timezone", help="local clock of the times (default: the format's city; pings: UTC)")
    learn.add_argument("--holdout-share", type=float, default=0.15, help="latest share of trips held back to evaluate")
    learn.add_argument("--max-epochs", type=int, default=400)
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument("--no-activate", action="store_true", help="store the profile without putting it in force")
    learned = tsub.add_parser("learned", help="list the learned profiles of the active map, or switch the one in force")
    learned.add_argument("activate", nargs="?", help="a version to put in force, or 'none' for the base model")


def check_arguments(args: argparse.Namespace) -> None:
    if args.action != "learn":
        return
    if args.trips and not args.format:
        raise LearnError("--format is required with --trips (nyc-kaggle or nyc-taxi)")
    if args.from_pings and not args.since:
        raise LearnError("--since is required with --from-pings (an ISO time)")
    if not 0.0 < args.holdout_share < 0.9:
        raise LearnError("--holdout-share must be in (0, 0.9)")
    if args.max_epochs < 10:
        raise LearnError("--max-epochs must be at least 10")


def run(args: argparse.Namespace, repo: MapRepository, active: MapInfo) -> dict[str, Any]:
    check_arguments(args)
    if args.action == "learned":
        if args.activate:
            version = None if args.activate == "none" else args.activate
            try:
                epoch = repo.activate_learned_profile(active.id, version)
            except LookupError as exc:
                raise LearnError(str(exc)) from None
            return {"active": version, "traffic_epoch": epoch}
        return {"map": active.name, "profiles": [
            {k: v for k, v in p.items() if k != "metrics"} | {"holdout": p["metrics"].get("holdout", {}).get("gnn")}
            for p in repo.learned_profiles(active.id)
        ]}  # fmt: skip
    from travel_times.learn import learn_profile

    graph = RoadGraph(repo.load_network(active.id), map_version=active.id, name=active.name)
    trips: Trips | TripPaths
    if args.trips:
        try:
            trips = read_trips(Path(args.trips), args.format)
        except TripFileError as exc:
            raise LearnError(str(exc)) from None
        tz = args.timezone or FORMAT_TIMEZONE[args.format]
        source = "trips"
    else:
        from travel_times.pings import ping_trips

        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise LearnError(f"--since: not an ISO time: {args.since!r}") from None
        tz = args.timezone or "UTC"
        try:
            trips = ping_trips(repo.engine, graph, since, tz)
        except ValueError as exc:
            raise LearnError(str(exc)) from None
        source = "pings"
    try:
        result = _learn(learn_profile, graph, trips, args, source)
    except ValueError as exc:
        raise LearnError(str(exc)) from None
    result.metrics["timezone"] = tz
    epoch = repo.save_learned_profile(active.id, result.version, result.onnx_model, result.metrics, source=source,
                                      timezone=tz, activate=not args.no_activate)  # fmt: skip
    return {"version": result.version, "active": not args.no_activate, "traffic_epoch": epoch,
            "metrics": result.metrics}  # fmt: skip


def _learn(
    learn_profile: Any, graph: RoadGraph, trips: Trips | TripPaths, args: argparse.Namespace, source: str
) -> Any:
    return learn_profile(graph, trips, holdout_share=args.holdout_share, seed=args.seed, max_epochs=args.max_epochs,
                         source=source)  # fmt: skip


def format_result(out: dict[str, Any]) -> str:
    return json.dumps(out, indent=1, default=str)
