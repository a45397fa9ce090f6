"""``routing drivers``: run simulated driver apps against a running service and print a summary.

Registered into the ``routing`` console script by ``register(sub)``; the simulation code is
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "drivers", help="simulate driver apps: plan, drive, ping, re-plan against a running service",
        description="Simulated drivers drive their routes in accelerated time, ping their positions and observed "
        "speeds, re-plan when late or when the traffic epoch changes, and plan locally (provisional routes) when "
        "the service cannot be reached. Prints a summary; --report writes it as JSON.",
    )  # fmt: skip
    p.add_argument("--url", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--count", type=int, default=3, help="number of drivers (default 3)")
    p.add_argument("--speedup", type=float, default=10.0, help="simulated seconds per wall second (default 10)")
    p.add_argument("--duration", type=float, default=60.0, help="wall seconds to run (default 60)")
    p.add_argument("--token", default=None,
                   help="bearer token (a dispatcher token: it acts for every driver); default: ROUTING_TOKEN")  # fmt: skip
    p.add_argument("--stops-file", default=None,
                   help="CSV with a header lat,lon[,id]: stops and starts are drawn from its rows "
                        "(default: random road positions of the active map)")  # fmt: skip
    p.add_argument("--stops-per-driver", type=int, default=8, help="stops per driver (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of stops, traffic and search (default 0)")
    p.add_argument("--ping-interval", type=float, default=2.0, help="simulated seconds between pings (default 2)")
    p.add_argument("--late-threshold", type=float, default=120.0,
                   help="re-plan when this many simulated seconds behind the plan (default 120)")  # fmt: skip
    p.add_argument("--replan-cooldown", type=float, default=60.0,
                   help="least simulated seconds between two re-plans of a driver (default 60)")  # fmt: skip
    p.add_argument("--congested-share", type=float, default=0.3,
                   help="share of road segments slower than planned (default 0.3)")  # fmt: skip
    p.add_argument("--service-s", type=float, default=60.0, help="seconds spent at each stop (default 60)")
    p.add_argument("--on-time-slack", type=float, default=300.0,
                   help="a stop is on time up to this many seconds after its first promised arrival (default 300)")  # fmt: skip
    p.add_argument("--retry", type=float, default=1.0,
                   help="wall seconds between attempts to reach the service while on a provisional route")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=10.0, help="HTTP timeout of a route request, s")
    p.add_argument("--time-budget-ms", type=float, default=50.0, help="search budget per route (service and local)")
    p.add_argument("--model-dir", default=None,
                   help="edge fallback model folder (model.int8.onnx); default: ROUTING_MODEL_DIR or var/models")  # fmt: skip
    p.add_argument("--report", default=None, help="also write the summary as JSON to this file")
    p.set_defaults(func=cmd_drivers)


def cmd_drivers(args: argparse.Namespace) -> int:
    import logging

    from driver_app_stub.simulator import (
        ConfigError,
        SimulationConfig,
        SimulationError,
        format_summary,
        run_simulation,
        write_report,
    )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.report and not Path(args.report).resolve().parent.is_dir():
        print(f"error: --report: no folder {Path(args.report).parent} to write {args.report} into", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = SimulationConfig(
            url=args.url, count=args.count, speedup=args.speedup, duration_s=args.duration,
            token=args.token if args.token is not None else os.environ.get("ROUTING_TOKEN") or None,
            stops_file=Path(args.stops_file) if args.stops_file else None, stops_per_driver=args.stops_per_driver,
            seed=args.seed, ping_interval_s=args.ping_interval, late_threshold_s=args.late_threshold,
            replan_cooldown_s=args.replan_cooldown, congested_share=args.congested_share, service_s=args.service_s,
            on_time_slack_s=args.on_time_slack, retry_s=args.retry, request_timeout_s=args.request_timeout,
            time_budget_ms=args.time_budget_ms,
            model_dir=Path(args.model_dir or os.environ.get("ROUTING_MODEL_DIR") or "var/models"),
        )  # fmt: skip
        report = run_simulation(config)
    except (ConfigError, SimulationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_summary(report))
    if args.report:
        try:
            write_report(report, Path(args.report))
        except OSError as exc:
            print(f"error: --report: cannot write {args.report}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    return 0
