"""``routing export-requests``: the request log (``route_requests``) as JSON lines, for ``routing replay``.

One object a line, oldest first: ``received_at`` (ISO 8601, UTC), ``route_id``, ``driver_id``,
``status`` (the HTTP status the service answered), ``error_kind``, ``cache`` and ``request``
(the original ``POST /v1/routes`` body, with the schema's defaults filled in). Runs where the
database is: it reads ``ROUTING_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from graph_store.models import RouteRequestLog


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def iso_time(text: str) -> datetime:
    """An argparse type: ISO 8601 time; naive times are UTC."""
    try:
        return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def iter_logged(engine: Engine, since: datetime | None = None, until: datetime | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Logged requests with ``since <= received_at < until``, oldest first, at most ``limit``."""
    query = select(RouteRequestLog).order_by(RouteRequestLog.received_at, RouteRequestLog.route_id)
    if since is not None:
        query = query.where(RouteRequestLog.received_at >= _utc(since))
    if until is not None:
        query = query.where(RouteRequestLog.received_at < _utc(until))
    if limit is not None:
        query = query.limit(limit)
    with Session(engine) as session:
        for row in session.execute(query.execution_options(yield_per=1000)).scalars():
            yield {
                "received_at": _utc(row.received_at).isoformat(), "route_id": row.route_id,
                "driver_id": row.driver_id, "status": row.status, "error_kind": row.error_kind, "cache": row.cache,
                "request": json.loads(row.request_json),
            }  # fmt: skip


@contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        return
    with Path(path).open("w", encoding="utf-8") as fh:
        yield fh


def cmd_export_requests(args: argparse.Namespace) -> int:
    from sqlalchemy import inspect

    from graph_store.repository import make_engine
    from routing_api.cli import CliError, _settings

    if args.since is not None and args.until is not None and args.until <= args.since:
        raise CliError("--until must be later than --since")
    if args.out != "-" and not Path(args.out).parent.is_dir():
        raise CliError(f"--out: folder {Path(args.out).parent} does not exist")
    engine = make_engine(_settings().database_url)
    try:
        if not inspect(engine).has_table(RouteRequestLog.__tablename__):
            raise CliError("database not initialised: run `routing db upgrade` first")
        n = 0
        try:
            with _output(args.out) as out:
                for row in iter_logged(engine, args.since, args.until, args.limit):
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
                    n += 1
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    print(f"exported {n} requests" + ("" if args.out == "-" else f" to {args.out}"), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add ``routing export-requests`` to the ``routing`` subcommands."""
    p = sub.add_parser("export-requests", help="write the request log as JSON lines (input of `routing replay`)")
    p.add_argument("--since", type=iso_time, default=None, help="first received_at to include (ISO 8601; naive = UTC)")
    p.add_argument("--until", type=iso_time, default=None, help="received_at to stop before (ISO 8601; naive = UTC)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many requests (the oldest)")
    p.add_argument("--out", required=True, help="the .jsonl file to write, or - for standard output")
    p.set_defaults(func=cmd_export_requests)
