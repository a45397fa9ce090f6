#!/usr/bin/env python
"""Replay benchmark: real NYC taxi trips on the Manhattan midtown map through `routing replay`.

Each kept trip (pickup and drop-off on the map) becomes, at its pickup time, a route request from the
pickup visiting its own drop-off and up to 9 drop-offs close by (driver_app_stub/nyc_taxi.py). The
requests are replayed open loop by the `routing replay` command itself, as a subprocess: request i
goes out at (t_i - t_0) / speed, latency counts from that scheduled time (no coordinated omission).

Steps, everything on fresh state in a temp dir (services mode: a new PostgreSQL database, a Redis
key prefix and a RabbitMQ queue of its own, removed at the end):

1. monolith (`routing serve`, SQLite, Manhattan map): the issue's check, `routing replay` of the CSV
   (`--format nyc-taxi`) for 30 s at 20x, which also saves the built requests as JSON lines;
2. the same requests at each speed of ``--speeds`` against the monolith, then against services mode
   (`routing serve --mode api` + 1, then 2, `routing worker`), the route cache flushed before each run.

Every run replays recorded time from ``START_S`` (00:10, past the sample's ramp-up) for ``--duration``
wall seconds (``--duration-1x`` at 1x), but never past ``END_S`` (00:50, where the sample thins out
because later pickups drop off after its end).

    .venv/bin/python bench/replay.py                       # everything, ~17 min on 2 cores
    .venv/bin/python bench/replay.py --modes monolith --speeds 1,20 --duration 10   # a quick look

Writes ``bench/results/replay-<UTC timestamp>.json`` (``replay-latest.json`` after a full run) and the
charts of the 20x check and of each mode's 50x run as ``bench/results/replay-<mode>-<speed>x.html``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import BenchError, free_port, git_info, machine_info, routing_bin, sigterm_as_exit, versions
from serving import Cpu, Infra, Proc, compile_model, log, other_benchmarks, run_cli, service_env, wait_ready

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED = REPO.parent / "shared" / "data"
MAP = SHARED / "road_networks" / "manhattan_midtown.osm.pbf"
TRIPS = SHARED / "trip_requests" / "nyc_taxi_2013-01-01_debs2015_sorted_data_10k.csv"
SCHEMA = 1
SPEEDS = (1.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0)
START_S = 600.0  # recorded seconds skipped: 00:00-00:10 is the sample's ramp-up
END_S = 3000.0  # recorded seconds from the first pickup where runs stop (00:50)
CHECK_SPEED, CHECK_DURATION_S = 20.0, 30.0  # the "30 s at 20x answers every request"
CHART_SPEEDS = (50.0,)
P99_LIMIT_MS = 200.0
MODES = ("monolith", "services")


class Deployment:
    """A running service: its URL, its dispatcher token and the processes to count CPU for."""

    def __init__(self, name: str, url: str, token: str, procs: dict[str, Proc]) -> None:
        self.name, self.url, self.token, self.procs = name, url, token, procs

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.alive()]

    def flush_cache(self) -> None:
        r = httpx.post(f"{self.url}/v1/admin/cache/flush", headers={"Authorization": f"Bearer {self.token}"},
                       timeout=30)  # fmt: skip
        if r.status_code != 200:
            raise BenchError(f"{self.name}: cache flush answered {r.status_code}: {r.text[:200]}")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def replay(dep: Deployment, source: Path, speed: float, duration_s: float, tmp: Path, *,
           extra: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One `routing replay` run as a subprocess; its report, the command, the CPU split and its chart path."""
    tag = f"{dep.name}-{speed:g}x"
    report, chart = tmp / f"replay-{tag}.json", tmp / f"replay-{tag}.html"
    args = [str(source), "--url", dep.url, "--speed", f"{speed:g}", "--duration", f"{duration_s:g}",
            "--start-offset", f"{START_S:g}", "--report", str(report), "--chart", str(chart),
            *(extra or [])]  # fmt: skip
    shown = ["routing", "replay", *args, "--token", "$TOKEN"]
    cpu, child0 = Cpu(dep.pids()), _children_cpu_s()
    proc = subprocess.run([routing_bin(), "replay", *args, "--token", dep.token], cwd=REPO, capture_output=True,
                          text=True, check=False, env={**os.environ, "ROUTING_TOKEN": ""})  # fmt: skip
    use = cpu.stop()
    replay_cpu = _children_cpu_s() - child0
    if proc.returncode not in (0, 1) or not report.is_file():
        raise BenchError(f"`{' '.join(shown)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    data = json.loads(report.read_text())
    cpus = len(os.sched_getaffinity(0))
    use["replay_cpu_s"] = round(replay_cpu, 2)
    # Cpu counts the replay subprocess among "others"; take it out
    use["others_share"] = round(max(0.0, use["others_share"] - replay_cpu / (use["wall_s"] * cpus)), 3)
    lat = data["latency_ms"]
    errs = ", ".join(f"{k}: {v}" for k, v in data["errors"].items()) or "none"
    log(f"  {tag}: {data['sent']} sent, {data['ok']} ok, errors {errs}, late {data['late_sends']}, "
        f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms, {data['throughput_rps']} req/s; CPU service "
        f"{use['service_cpu_s']} s, replay {use['replay_cpu_s']} s, others {use['others_share']:.0%}")  # fmt: skip
    return {"mode": dep.name, "speed": speed, "duration_s": duration_s, "command": " ".join(shown),
            "exit_code": proc.returncode, "report": data, "cpu": use, "chart": str(chart)}  # fmt: skip


def duration_for(speed: float, duration_s: float, duration_1x_s: float) -> float:
    wanted = duration_1x_s if speed == 1.0 else duration_s
    return round(min(wanted, (END_S - START_S) / speed), 2)


def speed_runs(dep: Deployment, source: Path, speeds: tuple[float, ...], args: argparse.Namespace,
               tmp: Path) -> list[dict[str, Any]]:  # fmt: skip
    runs = []
    for speed in speeds:
        dep.flush_cache()
        runs.append(replay(dep, source, speed, duration_for(speed, args.duration, args.duration_1x), tmp))
    return runs


def warm_up(dep: Deployment, source: Path, tmp: Path) -> None:
    """A few unmeasured requests (connections, first batches, allocator); from before the measured window."""
    subprocess.run([routing_bin(), "replay", str(source), "--url", dep.url, "--token", dep.token, "--speed", "30",
                    "--duration", "3", "--report", str(tmp / "warm-up.json")], cwd=REPO, capture_output=True,
                   check=False)  # fmt: skip


def token_for(env: dict[str, str]) -> str:
    out = run_cli(["tokens", "create", "--role", "dispatcher", "--rate-limit", "0", "--name", "bench replay"], env)
    return out.splitlines()[-1]


def run_monolith(env: dict[str, str], tmp: Path, args: argparse.Namespace, result: dict[str, Any]) -> Path:
    """The 20x check and the speed runs on the monolith; returns the saved requests (JSON lines)."""
    env = {**env, "ROUTING_DATABASE_URL": f"sqlite:///{tmp / 'routing.sqlite3'}"}
    run_cli(["db", "upgrade"], env)
    result["setup"]["import_map"] = run_cli(["import-map", str(MAP)], env)
    token = token_for(env)
    port = free_port()
    server = Proc("monolith", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp)
    dep = Deployment("monolith", f"http://127.0.0.1:{port}", token, {"serve": server})
    requests = tmp / "nyc-manhattan.jsonl"
    try:
        log(f"monolith ready in {wait_ready(dep.url, [server]):.1f} s")
        # the check: the CSV itself, converted by the service's own map, 30 s at 20x
        extra = ["--format", "nyc-taxi", "--save-requests", str(requests), "--fail-on-errors"]
        check = replay(dep, TRIPS, CHECK_SPEED, CHECK_DURATION_S, tmp, extra=extra)
        result["check"] = check
        rep = check["report"]
        result["check"]["met"] = check["exit_code"] == 0 and rep["ok"] == rep["sent"] == rep["scheduled"]
        log(f"check (30 s at 20x answers every request): {'MET' if result['check']['met'] else 'NOT MET'}")
        result["conversion"] = rep["config"]["nyc_taxi"]
        warm_up(dep, requests, tmp)
        result["runs"] += speed_runs(dep, requests, args.speeds, args, tmp)
    finally:
        server.stop()
        result["servers"]["monolith"] = {"log_warnings": server.warnings()}
    return requests


def run_services(env: dict[str, str], tmp: Path, requests: Path, args: argparse.Namespace,
                 result: dict[str, Any]) -> None:  # fmt: skip
    infra = Infra()
    infra.check()
    procs: dict[str, Proc] = {}
    try:
        infra.create()
        env = {**env, "ROUTING_DATABASE_URL": infra.db_url, "ROUTING_REDIS_URL": os.environ.get(
                   "ROUTING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
               "ROUTING_AMQP_URL": os.environ.get("ROUTING_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
               "ROUTING_QUEUE_NAME": infra.queue, "ROUTING_CACHE_PREFIX": infra.prefix}  # fmt: skip
        run_cli(["db", "upgrade"], env)
        run_cli(["import-map", str(MAP)], env)
        token = token_for(env)
        port = free_port()
        procs["w1"] = Proc("services-w1", ["worker", "--worker-id", "w1"], env, tmp)
        procs["api"] = Proc("services-api", ["serve", "--mode", "api", "--host", "127.0.0.1", "--port", str(port)],
                            env, tmp)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        log(f"services: API ready in {wait_ready(url, list(procs.values())):.1f} s")
        for workers in (1, 2):
            if workers == 2:
                procs["w2"] = Proc("services-w2", ["worker", "--worker-id", "w2"], env, tmp)
            t_wait = time.perf_counter()
            while infra.consumers() < workers:
                name = f"w{workers}"
                if time.perf_counter() - t_wait > 120 or not procs[name].alive():
                    raise BenchError(f"worker {name} never consumed:\n{procs[name].tail()}")
                time.sleep(0.2)
            dep = Deployment(f"services-{workers}w", url, token, procs)
            warm_up(dep, requests, tmp)
            result["runs"] += speed_runs(dep, requests, args.speeds, args, tmp)
    finally:
        for p in procs.values():
            p.stop()
        result["servers"]["services"] = {"log_warnings": {p.name: p.warnings() for p in procs.values()},
                                         "database": infra.db_name, "queue": infra.queue}  # fmt: skip
        problems = infra.remove()
        if problems:
            result.setdefault("cleanup_problems", []).extend(problems)


# -- report ---------------------------------------------------------------------------------------------


def _v(x: Any) -> str:
    return "-" if x is None else (f"{x:.1f}" if isinstance(x, float) else str(x))


def runs_table(runs: list[dict[str, Any]]) -> str:
    head = ("| speed | window s | offered req/s | sent | ok | errors | late sends | p50 ms | p90 ms | p99 ms | "
            "p99.9 ms | max ms | req/s | cache hits | CPU s service / replay | others' CPU |")  # fmt: skip
    lines = [head, "|---:|" + "---:|" * (head.count("|") - 2)]
    for r in runs:
        d, lat, c = r["report"], r["report"]["latency_ms"], r["cpu"]
        errs = ", ".join(f"{k}: {v}" for k, v in d["errors"].items()) or "0"
        if d["unanswered"]:
            errs += f", unanswered: {d['unanswered']}"
        lines.append(f"| {r['speed']:g}x | {r['duration_s']:g} | {_v(d['offered_rps'])} | {d['sent']} | {d['ok']} | "
                     f"{errs} | {d['late_sends']} | {_v(lat['p50'])} | {_v(lat['p90'])} | {_v(lat['p99'])} | "
                     f"{_v(lat['p999'])} | {_v(lat['max'])} | {_v(d['throughput_rps'])} | "
                     f"{_v(d['cache_hit_ratio'])} | {c['service_cpu_s']:.1f} / {c['replay_cpu_s']:.1f} | "
                     f"{c['others_share']:.0%} |")  # fmt: skip
    return "\n".join(lines)


def limits(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: from which speed on the p99 stays above P99_LIMIT_MS (at that speed and every higher one tested;
    a single slow request can push the p99 of a small run over it, so the speeds where it does are listed too),
    and the first speed with any request not answered 200 (None: not in the tested range)."""
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["speed"])
        over = [(r["report"]["latency_ms"]["p99"] or 0.0) > P99_LIMIT_MS for r in mine]
        sustained = next((r["speed"] for i, r in enumerate(mine) if all(over[i:])), None)
        err = next((r["speed"] for r in mine if r["report"]["ok"] < r["report"]["sent"]), None)
        out[mode] = {"p99_over_200ms_from_speed": sustained,
                     "speeds_with_p99_over_200ms": [r["speed"] for r, o in zip(mine, over, strict=True) if o],
                     "errors_from_speed": err, "speeds_tested": [r["speed"] for r in mine]}  # fmt: skip
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: %(default)s")
    p.add_argument("--speeds", default=",".join(f"{s:g}" for s in SPEEDS), help="replay speeds (default %(default)s)")
    p.add_argument("--duration", type=float, default=30.0, help="wall seconds per run (default 30)")
    p.add_argument("--duration-1x", type=float, default=60.0, help="wall seconds of the 1x run (default 60)")
    p.add_argument("--no-save", action="store_true", help="print only; write no JSON or chart")
    args = p.parse_args(argv)
    args.modes_set = {m.strip() for m in args.modes.split(",") if m.strip()}
    args.speeds = tuple(float(s) for s in args.speeds.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = args.modes_set - set(MODES)
    if unknown:
        print(f"error: unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    if not MAP.is_file() or not TRIPS.is_file():
        print(f"error: reference data not found under {SHARED}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": "bench/replay.py", "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "options": {"modes": sorted(args.modes_set), "speeds": list(args.speeds), "duration_s": args.duration,
                    "duration_1x_s": args.duration_1x, "start_s": START_S, "end_s": END_S, "map": MAP.name,
                    "trips": TRIPS.name, "p99_limit_ms": P99_LIMIT_MS},
        "machine": machine_info(), "git": git_info(), "other_benchmarks_at_start": other_benchmarks(),
        "versions": versions(("fastapi", "uvicorn", "httpx", "uvloop", "onnxruntime", "numba", "sqlalchemy")),
        "setup": {}, "servers": {}, "runs": [],
    }  # fmt: skip
    log(f"bench/replay.py: modes {sorted(args.modes_set)}, speeds {args.speeds}; "
        f"{result['machine']['cpus_usable']} CPUs, load {result['machine']['loadavg_start']}")  # fmt: skip
    if result["other_benchmarks_at_start"]:
        log(f"warning: other benchmarks/tests are running: {result['other_benchmarks_at_start']}")
    t0 = time.perf_counter()
    try:
        with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp_name:
            tmp = Path(tmp_name)
            env = service_env(tmp)
            compile_model(env, tmp / "models")
            requests = run_monolith(env, tmp, args if "monolith" in args.modes_set else _no_speeds(args), result)
            if "services" in args.modes_set:
                run_services(env, tmp, requests, args, result)
            if not args.no_save:
                RESULTS.mkdir(parents=True, exist_ok=True)
                charts = [("monolith", CHECK_SPEED, result["check"]["chart"])]
                charts += [(r["mode"], r["speed"], r["chart"]) for r in result["runs"] if r["speed"] in CHART_SPEEDS]
                for mode, speed, path in charts:
                    target = RESULTS / f"replay-{mode}-{speed:g}x.html"
                    shutil.copyfile(path, target)
                    result.setdefault("charts", []).append(str(target.relative_to(REPO)))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["limits"] = limits(result["runs"])
    for r in (result["check"], *result["runs"]):
        r.pop("chart", None)

    print(f"\n### check: 30 s at 20x, monolith: {'MET' if result['check']['met'] else 'NOT MET'}\n")
    print(runs_table([result["check"]]))
    for mode in dict.fromkeys(r["mode"] for r in result["runs"]):
        print(f"\n### {mode}\n\n{runs_table([r for r in result['runs'] if r['mode'] == mode])}")
    print("\n### limits\n")
    for mode, lim in result["limits"].items():
        p99, err, top = lim["p99_over_200ms_from_speed"], lim["errors_from_speed"], max(lim["speeds_tested"])
        print(f"- {mode}: p99 > {P99_LIMIT_MS:g} ms " + (f"from {p99:g}x on" if p99 else f"not up to {top:g}x")
              + f" (over it at {', '.join(f'{s:g}x' for s in lim['speeds_with_p99_over_200ms']) or 'none'}); "
              + (f"errors from {err:g}x" if err else f"no errors up to {top:g}x"))  # fmt: skip
    if not args.no_save:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        target = RESULTS / f"replay-{stamp}.json"
        text = json.dumps(result, indent=1) + "\n"
        target.write_text(text)
        full = args.modes_set == set(MODES) and args.speeds == SPEEDS
        if full:
            (RESULTS / "replay-latest.json").write_text(text)
        print(f"\nwrote {target.relative_to(REPO)}" + (" and bench/results/replay-latest.json" if full else ""))
    print(f"wall {result['wall_s']:.0f} s; load {result['machine']['loadavg_start']} -> "
          f"{result['machine']['loadavg_end']}")  # fmt: skip
    return 0


def _no_speeds(args: argparse.Namespace) -> argparse.Namespace:
    """The monolith still runs the 20x check (it also builds the requests), without the speed runs."""
    return argparse.Namespace(**{**vars(args), "speeds": ()})


if __name__ == "__main__":
    sys.exit(main())
