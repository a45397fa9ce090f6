"""``routing replay``: re-send recorded traffic to the API, open loop, and report latency.

Registered into the ``routing`` console script by ``routing_api.cli``; imports nothing of
``routing_api`` (this package talks to the service over HTTP only). Heavy imports happen
inside the command, so ``routing --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
FORMATS = ("jsonl", "nyc-taxi")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _format_of(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    name = args.input.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "nyc-taxi"
    from driver_app_stub.replay import ReplayError

    raise ReplayError(f"cannot tell the format of {args.input}: pass --format {' or '.join(FORMATS)}")


def _check_output(path: str | None, option: str, suffixes: tuple[str, ...]) -> Path | None:
    from driver_app_stub.replay import ReplayError

    if path is None:
        return None
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise ReplayError(f"{option} must end with {' or '.join(suffixes)}, got {path!r}")
    if not p.parent.is_dir():
        raise ReplayError(f"{option}: folder {p.parent} does not exist")
    if p.is_dir():
        raise ReplayError(f"{option}: {path} is a folder")
    return p


def _raise_open_files_limit() -> None:
    """Every request in flight holds a socket: lift the soft limit to the hard one, so that a slow server
    shows up as latency, not as the client's own "too many open files" errors."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from tqdm import tqdm

    from driver_app_stub import nyc_taxi
    from driver_app_stub.latency_report import format_table, write_chart_html
    from driver_app_stub.replay import ReplayConfig, ReplayError, read_jsonl, run, schedule, write_jsonl

    try:
        config = ReplayConfig(url=args.url.rstrip("/"), speed=args.speed, duration_s=args.duration,
                              start_offset_s=args.start_offset, concurrency_limit=args.concurrency_limit,
                              token=args.token or None, timeout_s=args.timeout, late_ms=args.late_ms)  # fmt: skip
        _check_output(args.report, "--report", (".json",))
        report_path = Path(args.report)
        chart_path = _check_output(args.chart, "--chart", (".html", ".htm"))
        save_path = _check_output(args.save_requests, "--save-requests", (".jsonl",))
        fmt = _format_of(args)
        source = Path(args.input)
        if not source.is_file():
            raise ReplayError(f"input file not found: {source}")
        extra: dict[str, Any] = {"input": str(source), "format": fmt}
        if fmt == "jsonl":
            records = read_jsonl(source)
        else:
            plan = nyc_taxi.TripPlan(k=args.k, radius_km=args.radius_km, window_min=args.window_min,
                                     spread_minutes=not args.no_spread, time_budget_ms=args.time_budget_ms)  # fmt: skip
            bbox = nyc_taxi.BBox.parse(args.map_bbox) if args.map_bbox else None
            if args.snap_radius_m is not None and not args.snap_radius_m > 0:
                raise ReplayError(f"--snap-radius-m must be positive, got {args.snap_radius_m}")
            conversion = nyc_taxi.convert(source, config.url, config.token, plan, bbox, args.snap_radius_m,
                                          log=lambda m: print(m, file=sys.stderr))  # fmt: skip
            records, info = asyncio.run(conversion)
            extra["nyc_taxi"] = info
            print(f"{info['trips_read']} trips: {info['outside_bbox']} outside the map's bbox, {info['off_road']} "
                  f"not snapped to a road, {info['trips_kept']} kept -> {info['requests']} requests "
                  f"({info['stops_mean']} stops on average)", file=sys.stderr)  # fmt: skip
        if save_path is not None:
            write_jsonl(save_path, records)
        planned = schedule(records, config)
        if not planned:
            raise ReplayError("no request falls inside the replay window (check --start-offset and --duration)")
    except ReplayError as exc:
        return _fail(str(exc))

    _raise_open_files_limit()
    span = planned[-1][0]
    print(f"replaying {len(planned)} requests over {span:.1f} s at {config.speed:g}x against {config.url}",
          file=sys.stderr)  # fmt: skip
    bar = tqdm(total=len(planned), unit="req", desc="replay", disable=None, file=sys.stderr)
    failed = 0

    def progress(sample: Any) -> None:
        nonlocal failed
        if sample.outcome not in (None, "ok"):
            failed += 1
            bar.set_postfix(errors=failed, refresh=False)
        bar.update(1)

    try:
        result = run(records, config, progress)
    finally:
        bar.close()
    report = result.report(extra)
    try:
        report_path.write_text(json.dumps(report, indent=1) + "\n")
        if chart_path is not None:
            write_chart_html(chart_path, report, result.chart_points(), result.histogram)
    except OSError as exc:
        return _fail(f"cannot write the report: {exc.strerror or exc}")
    print(format_table(report))
    print(f"report: {report_path}" + (f", chart: {chart_path}" if chart_path else ""))
    if result.interrupted:
        return EXIT_INTERRUPTED
    if args.fail_on_errors and (report["ok"] != report["sent"] or report["sent"] != report["scheduled"]):
        print(f"error: {report['sent'] - report['ok']} of {report['sent']} requests were not answered 200",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def register(sub: Any) -> None:
    """Add ``routing replay`` to the ``routing`` subcommands."""
    p = sub.add_parser(
        "replay", help="re-send recorded requests to the API, open loop, and report latency",
        description="Open-loop replay: each request is sent at (recorded time - first time) / speed after the "
        "start, whatever happened before it; latency counts from that scheduled time. Ctrl-C stops and writes a "
        "partial report.",
    )  # fmt: skip
    p.add_argument("input", help="a request log (`routing export-requests`, .jsonl) or the NYC taxi CSV")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the file name (.jsonl / .csv)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the API (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("ROUTING_TOKEN"),
                   help="bearer token (dispatcher, made with --rate-limit 0; default: $ROUTING_TOKEN)")  # fmt: skip
    p.add_argument("--speed", type=float, default=1.0, help="recorded seconds per wall second (default 1)")
    p.add_argument("--duration", type=float, default=None, help="stop scheduling after this many wall seconds")
    p.add_argument("--start-offset", type=float, default=0.0,
                   help="skip this many recorded seconds from the first request (default 0)")  # fmt: skip
    p.add_argument("--concurrency-limit", type=int, default=None,
                   help="most requests in flight; a send waiting for a slot is late (default: no limit)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--late-ms", type=float, default=10.0,
                   help="a request out later than this after its scheduled time is late (default 10)")  # fmt: skip
    p.add_argument("--report", required=True, help="JSON report file to write")
    p.add_argument("--chart", default=None, help="HTML file: latency over time and its distribution (inline SVG)")
    p.add_argument("--fail-on-errors", action="store_true",
                   help="exit 1 unless every scheduled request was answered 200")  # fmt: skip
    nyc = p.add_argument_group("nyc-taxi", "how taxi trips become route requests (see driver_app_stub/nyc_taxi.py)")
    nyc.add_argument("--k", type=int, default=9, help="drop-offs close by added to each trip's own (default 9)")
    nyc.add_argument("--radius-km", type=float, default=1.0, help="close by: within this of the drop-off (default 1)")
    nyc.add_argument("--window-min", type=float, default=15.0,
                     help="close by: dropped off within this many minutes after it (default 15)")  # fmt: skip
    nyc.add_argument("--no-spread", action="store_true",
                     help="keep whole-minute pickup times as they are (default: spread over the minute)")  # fmt: skip
    nyc.add_argument(
        "--time-budget-ms", type=float, default=None, help="options.time_budget_ms (default: the service's)"
    )
    nyc.add_argument("--map-bbox", default=None,
                     help="min_lat,min_lon,max_lat,max_lon (default: the active map's, from /readyz)")  # fmt: skip
    nyc.add_argument("--snap-radius-m", type=float, default=None,
                     help="a point is on the map within this of a road (default: the service's limit)")  # fmt: skip
    nyc.add_argument("--save-requests", default=None, help="also write the built requests as a .jsonl log")
    p.set_defaults(func=cmd_replay)
