#!/usr/bin/env python
"""Soak: the services mode under steady load for a long time: zero errors, memory flat.

Starts ``routing serve --mode api`` + ``--workers`` ``routing worker`` processes on fresh state (a
PostgreSQL database, a Redis key prefix and a RabbitMQ queue of their own, removed at the end),
then keeps ``--connections`` virtual users busy (closed loop: each sends its next
``POST /v1/routes`` as soon as its previous answer came) for ``--duration`` seconds. A share
``--repeat`` of the bodies repeats earlier ones (cache hits), the rest are new (misses).

Every ``--sample-s`` seconds it samples the resident memory (VmRSS) of the API and of each
worker, and the answers of that window (count, errors, p50/p99 latency).

Verdict (exit status 0 = pass, 1 = fail):

* **zero errors**: every request answered 200 (a 4xx/5xx, a client timeout or a request still
  unanswered at the end is an error);
* **memory flat**, per process: after the warm-up (the first ``--warmup-frac`` of the run) the
  median RSS of the last third of the samples exceeds that of the first third by at most
  ``--max-growth-mb`` MB (default 64) or ``--max-growth-frac`` (default 10%), whichever is
  larger. The least-squares slope (MB/min) is reported too.

    .venv/bin/python bench/soak.py                  # 300 connections, 10 minutes (the issue's soak)
    .venv/bin/python bench/soak.py --duration 30    # a short check of the script itself

Writes ``bench/results/soak-<UTC timestamp>.json`` (``soak-short-...`` for runs under 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import BenchError, free_port, git_info, machine_info, sigterm_as_exit, versions
from serving import (
    AMQP_URL,
    CLIENT_TIMEOUT_S,
    JSON_HEADERS,
    REDIS_URL,
    Bodies,
    Infra,
    Proc,
    authorize,
    client_for,
    compile_model,
    log,
    pct,
    run_async,
    run_cli,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHORT_RUN_S = 300.0


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (None when it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


@dataclass
class Window:
    """The answers of one sampling window."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


class Load:
    """Closed-loop users, a body stream with repeats, per-window tallies."""

    def __init__(self, base_url: str, connections: int, stops: int, repeat: float, seed: int) -> None:
        self.base_url, self.connections, self.repeat = base_url, connections, repeat
        self.bodies = Bodies(seed, "soak", stops)
        self.recent: list[bytes] = []
        self.rng = np.random.default_rng(seed)
        self.window = Window()
        self.total = Window()
        self.error_samples: list[dict[str, Any]] = []

    def next_body(self) -> bytes:
        if self.recent and self.rng.random() < self.repeat:
            return self.recent[int(self.rng.integers(len(self.recent)))]
        body = self.bodies.next()
        self.recent.append(body)
        if len(self.recent) > 500:  # repeats come from the latest 500 distinct bodies
            self.recent.pop(0)
        return body

    def take_window(self) -> Window:
        w, self.window = self.window, Window()
        return w

    def _count(self, status: str, latency_ms: float, kind: str | None, at_s: float) -> None:
        for w in (self.window, self.total):
            if status == "200":
                w.ok += 1
                w.latencies_ms.append(latency_ms)
            else:
                w.errors[status] += 1
        if status != "200" and len(self.error_samples) < 50:
            self.error_samples.append({"status": status, "kind": kind, "at_s": round(at_s, 2)})

    async def run(self, duration_s: float, on_tick: Any, tick_s: float) -> int:
        """Keep every user busy for ``duration_s``; ``on_tick()`` every ``tick_s``. Returns requests unanswered."""
        t0 = time.perf_counter()
        end = t0 + duration_s
        async with client_for(self.base_url, self.connections) as client:

            async def user() -> None:
                while time.perf_counter() < end:
                    sent = time.perf_counter()
                    try:
                        r = await client.post("/v1/routes", content=self.next_body(), headers=JSON_HEADERS)
                    except httpx.HTTPError as exc:  # the connection failed: an error too, named
                        self._count(type(exc).__name__, 0.0, repr(exc)[:200], sent - t0)
                        continue
                    kind = None
                    if r.status_code != 200:
                        with contextlib.suppress(ValueError, LookupError, TypeError, AttributeError):
                            kind = r.json()["detail"][0]["kind"]
                    self._count(str(r.status_code), (time.perf_counter() - sent) * 1e3, kind, sent - t0)

            async def ticker() -> None:
                while time.perf_counter() < end:
                    await asyncio.sleep(min(tick_s, max(0.0, end - time.perf_counter())))
                    on_tick(time.perf_counter() - t0)

            users = [asyncio.create_task(user()) for _ in range(self.connections)]
            tick = asyncio.create_task(ticker())
            _, pending = await asyncio.wait(users, timeout=duration_s + CLIENT_TIMEOUT_S + 5)
            for t in pending:
                t.cancel()
            await tick
            return len(pending)


def memory_verdict(series: list[float], times_s: list[float], max_growth_mb: float,
                   max_growth_frac: float) -> dict[str, Any]:  # fmt: skip
    """Growth of one process's RSS after the warm-up: last third's median vs first third's."""
    if len(series) < 3:
        return {"samples": len(series), "flat": None, "why": "fewer than 3 samples after the warm-up"}
    third = max(1, len(series) // 3)
    first, last = float(np.median(series[:third])), float(np.median(series[-third:]))
    slope = float(np.polyfit(np.asarray(times_s) / 60.0, np.asarray(series), 1)[0])
    allowed = max(max_growth_mb, max_growth_frac * first)
    return {"samples": len(series), "first_third_mb": round(first, 1), "last_third_mb": round(last, 1),
            "growth_mb": round(last - first, 1), "allowed_growth_mb": round(allowed, 1),
            "slope_mb_per_min": round(slope, 2), "max_mb": round(max(series), 1), "flat": last - first <= allowed}  # fmt: skip


def soak(args: argparse.Namespace) -> dict[str, Any]:
    infra = Infra()
    infra.check()
    procs: dict[str, Proc] = {}
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(), "git": git_info(),
        "versions": versions(["routing-service", "fastapi", "uvicorn", "pika", "redis", "psycopg"]),
        "config": {k: getattr(args, k) for k in ("duration", "connections", "workers", "stops", "repeat", "sample_s",
                                                  "warmup_frac", "max_growth_mb", "max_growth_frac", "seed")},
    }  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        infra.create()
        env = {**os.environ, "ROUTING_DATABASE_URL": infra.db_url, "ROUTING_REDIS_URL": REDIS_URL,
               "ROUTING_AMQP_URL": AMQP_URL, "ROUTING_QUEUE_NAME": infra.queue, "ROUTING_CACHE_PREFIX": infra.prefix,
               "ROUTING_MODEL_DIR": str(tmp / "models"), "ROUTING_LOG_LEVEL": "warning"}  # fmt: skip
        run_cli(["db", "upgrade"], env)
        authorize(env)
        run_cli(["import-map"], env)
        compile_model(env, tmp / "models")  # once, before the workers start (they would race to)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        for i in range(1, args.workers + 1):
            procs[f"w{i}"] = Proc(f"soak-w{i}", ["worker", "--worker-id", f"w{i}"], env, tmp)
        procs["api"] = Proc("soak-api", ["serve", "--mode", "api", "--host", "127.0.0.1", "--port", str(port)], env,
                            tmp)  # fmt: skip
        ready = wait_ready(base, list(procs.values()))
        t_wait = time.perf_counter()
        while infra.consumers() < args.workers:
            dead = [p for p in procs.values() if not p.alive()]
            if dead or time.perf_counter() - t_wait > 180:
                raise BenchError(f"workers not consuming: {[p.name for p in dead]}\n"
                                 + "\n".join(p.tail() for p in procs.values()))  # fmt: skip
            time.sleep(0.2)
        log(f"soak: API ready in {ready:.1f} s, {args.workers} workers consuming; "
            f"{args.connections} connections for {args.duration:.0f} s")  # fmt: skip
        load = Load(base, args.connections, args.stops, args.repeat, args.seed)
        samples: list[dict[str, Any]] = []

        def on_tick(at_s: float) -> None:
            w = load.take_window()
            rss = {name: rss_mb(p.pid) for name, p in procs.items()}
            row = {"at_s": round(at_s, 1), "ok": w.ok, "errors": dict(w.errors), "p50_ms": pct(w.latencies_ms, 50),
                   "p99_ms": pct(w.latencies_ms, 99), "rss_mb": {k: None if v is None else round(v, 1)
                                                                  for k, v in rss.items()}}  # fmt: skip
            samples.append(row)
            mem = " ".join(f"{k} {v:.0f}" for k, v in rss.items() if v is not None)
            log(f"  t={at_s:6.1f}s  ok {w.ok:5d}  errors {sum(w.errors.values()):3d}  p50 {row['p50_ms']} ms  "
                f"p99 {row['p99_ms']} ms  RSS MB: {mem}")  # fmt: skip

        unanswered = run_async(load.run(args.duration, on_tick, args.sample_s))
        total = load.total
        errors = sum(total.errors.values()) + unanswered
        warm_until = args.warmup_frac * args.duration
        memory = {}
        for name in procs:
            kept = [(s["at_s"], s["rss_mb"][name]) for s in samples
                    if s["at_s"] >= warm_until and s["rss_mb"].get(name) is not None]  # fmt: skip
            memory[name] = memory_verdict([v for _, v in kept], [t for t, _ in kept], args.max_growth_mb,
                                          args.max_growth_frac)  # fmt: skip
        alive = {name: p.alive() for name, p in procs.items()}
        metrics = httpx.get(f"{base}/metrics", headers=JSON_HEADERS, timeout=30).text
        counters = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                    if line.startswith(("routing_persist_", "routing_queue_duplicate", "routing_model_fallbacks",
                                        "routing_errors_total"))}  # fmt: skip
        result.update({
            "requests": total.ok + sum(total.errors.values()) + unanswered, "ok": total.ok,
            "errors": {**dict(total.errors), **({"unanswered": unanswered} if unanswered else {})},
            "error_samples": load.error_samples, "throughput_rps": round(total.ok / args.duration, 1),
            "p50_ms": pct(total.latencies_ms, 50), "p99_ms": pct(total.latencies_ms, 99),
            "memory": memory, "processes_alive_at_end": alive, "server_counters": counters, "samples": samples,
        })  # fmt: skip
        flat = all(m["flat"] is not False for m in memory.values())
        result["verdict"] = {"zero_errors": errors == 0, "memory_flat": flat, "all_alive": all(alive.values()),
                             "pass": errors == 0 and flat and all(alive.values())}  # fmt: skip
    finally:
        for p in procs.values():
            p.stop()
        result["log_warnings"] = {p.name: p.warnings() for p in procs.values()}
        problems = infra.remove()
        if problems:
            result["cleanup_problems"] = problems
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"requests {result['requests']}, ok {result['ok']}, errors {result['errors'] or 'none'}, "
             f"{result['throughput_rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms", "",
             "| process | RSS first third, MB | last third, MB | growth, MB | allowed, MB | slope, MB/min | flat |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in result["memory"].items():
        lines.append(f"| {name} | {m.get('first_third_mb', '-')} | {m.get('last_third_mb', '-')} | "
                     f"{m.get('growth_mb', '-')} | {m.get('allowed_growth_mb', '-')} | {m.get('slope_mb_per_min', '-')} "
                     f"| {m['flat']} |")  # fmt: skip
    v = result["verdict"]
    lines += ["", f"verdict: {'PASS' if v['pass'] else 'FAIL'} (zero errors: {v['zero_errors']}, memory flat: "
              f"{v['memory_flat']}, processes alive: {v['all_alive']})"]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--connections", type=int, default=300, help="concurrent users (default 300)")
    p.add_argument("--workers", type=int, default=2, help="routing worker processes (default 2)")
    p.add_argument("--stops", type=int, default=10, help="stops per request (default 10)")
    p.add_argument("--repeat", type=float, default=0.2, help="share of requests repeating an earlier body (cache hits)")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory samples (default 5)")
    p.add_argument("--warmup-frac", type=float, default=0.2, help="share of the run left out of the memory verdict")
    p.add_argument("--max-growth-mb", type=float, default=64.0, help="RSS growth allowed per process, MB")
    p.add_argument("--max-growth-frac", type=float, default=0.10, help="RSS growth allowed per process, fraction")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default bench/results/soak-<time>.json)")
    args = p.parse_args(argv)
    for name in ("duration", "sample_s"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.connections < 1 or args.workers < 1 or args.stops < 1:
        p.error("--connections, --workers and --stops must be >= 1")
    if not (0 <= args.repeat < 1 and 0 <= args.warmup_frac < 1):
        p.error("--repeat and --warmup-frac must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_as_exit():
            result = soak(args)
    except BenchError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "soak" if args.duration >= SHORT_RUN_S else "soak-short"
    out = args.out or RESULTS / f"{kind}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(report(result))
    print(f"written: {out}")
    return 0 if result["verdict"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
