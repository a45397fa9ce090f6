#!/usr/bin/env python
"""Edge fallback quality: how much worse are routes planned on the device than the service's?

For each map (the bundled Helsinki extract; Manhattan midtown from ``../shared/data``) the script
starts the real service (``routing serve`` on a temp SQLite database, auth on) and draws problems
the way the driver simulator does: random points of the map's extent snapped to roads by
``/nearest``, a start and ``n`` stops, an open route (``end: open``), no windows. Per problem:

* **service**: ``POST /v1/routes`` (road travel times, the served model, 50 ms search budget);
* **edge, int8** and **edge, plain**: ``driver_app_stub.edge.LocalPlanner`` on the straight-line
  estimate (haversine x detour factor / speed), guided by the int8 ONNX model or not, same search
  and budget;
* every order is then costed on the **real** road travel times of ``/table`` (the same departure
  time) with ``routing_core.evaluate``: gap % = (local - service) / service.

It also reports how wrong the device's arrival estimates are (estimated / real duration of the
same order) and the real seconds per straight-line metre (which sets ``DETOUR_FACTOR / SPEED_KPH``).

    .venv/bin/python bench/edge_fallback.py                     # 60 problems per size and map, sizes 10, 20
    .venv/bin/python bench/edge_fallback.py --problems 10 --sizes 10   # smoke run

Writes ``bench/results/edge_fallback-<UTC timestamp>.json`` and ``edge_fallback-latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import BenchError, free_port, git_info, machine_info, routing_bin, sigterm_as_exit, versions

from driver_app_stub.edge import DETOUR_FACTOR, SPEED_KPH, LocalPlanner, travel_time_matrix
from driver_app_stub.route_path import haversine_m
from routing_core.problem import EndKind, Problem, evaluate

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED = REPO.parent / "shared" / "data" / "road_networks"
DEPART_AT = "2026-12-01T10:00:00+00:00"  # a weekday morning; no profile is loaded, so free-flow speeds
BUDGET_MS = 50.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Service:
    """``routing serve`` on a fresh SQLite database holding one map, with a dispatcher token."""

    def __init__(self, map_path: Path | None, workdir: Path, model_dir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
        self.env.update(ROUTING_DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}", ROUTING_MODEL_DIR=str(model_dir),
                        ROUTING_LOG_LEVEL="warning")  # fmt: skip
        self._cli(["db", "upgrade"])
        self._cli(["import-map", *([str(map_path)] if map_path else [])])
        self.token = self._cli(["tokens", "create", "--role", "dispatcher", "--rate-limit", "0"]).splitlines()[-1]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = (workdir / "server.log").open("wb")
        self.proc = subprocess.Popen([routing_bin(), "serve", "--port", str(self.port)], env=self.env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        t0 = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited {self.proc.returncode}: see {workdir / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    break
            if time.perf_counter() - t0 > 300:
                raise BenchError(f"the service was not ready after 300 s: see {workdir / 'server.log'}")
            time.sleep(0.2)
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def _cli(self, args: list[str]) -> str:
        proc = subprocess.run([routing_bin(), *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            raise BenchError(f"`routing {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def draw_points(client: httpx.Client, service: Service, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` road positions: uniform in the map's extent, snapped by /nearest (points off the roads drawn again)."""
    checks = client.get(f"{service.base}/readyz").json()["checks"]
    lat0, lon0, lat1, lon1 = checks["map"]["bbox"]
    out: list[tuple[float, float]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n:
            raise BenchError("too few random points of the map's extent are near a road")
        lat, lon = rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)
        r = client.get(f"{service.base}/nearest/v1/driving/{lon:.6f},{lat:.6f}", headers=service.headers)
        if r.status_code == 200:
            lon_s, lat_s = r.json()["waypoints"][0]["location"]
            out.append((lat_s, lon_s))
    return np.asarray(out)


def real_matrix(client: httpx.Client, service: Service, points: np.ndarray) -> np.ndarray:
    coords = ";".join(f"{lon:.6f},{lat:.6f}" for lat, lon in points)
    r = client.get(f"{service.base}/table/v1/driving/{coords}", params={"depart_at": DEPART_AT},
                   headers=service.headers)  # fmt: skip
    r.raise_for_status()
    m = np.asarray(r.json()["durations"], dtype=np.float64)  # null (unreachable) -> nan
    return np.where(np.isnan(m), np.inf, m)


def service_order(client: httpx.Client, service: Service, points: np.ndarray) -> tuple[int, ...]:
    body = {"driver_id": "bench-edge", "start": {"lat": points[0, 0], "lon": points[0, 1]}, "end": "open",
            "depart_at": DEPART_AT, "options": {"time_budget_ms": BUDGET_MS},
            "stops": [{"id": str(i), "lat": lat, "lon": lon} for i, (lat, lon) in enumerate(points[1:], start=1)]}  # fmt: skip
    r = client.post(f"{service.base}/v1/routes", json=body, headers=service.headers, timeout=60)
    if r.status_code != 200:
        raise BenchError(f"/v1/routes answered {r.status_code}: {r.text[:300]}")
    return tuple(int(s) for s in r.json()["order"])


def travel(matrix: np.ndarray, order: tuple[int, ...]) -> float:
    ev = evaluate(Problem(matrix=matrix, end=EndKind.OPEN), order)
    if not ev.valid:
        raise BenchError(f"invalid order {order}: {ev.problems}")
    return ev.travel_s


def run_map(name: str, map_path: Path | None, sizes: list[int], problems: int, seed: int, model_dir: Path,
            workdir: Path) -> dict[str, Any]:  # fmt: skip
    log(f"{name}: starting the service")
    service = Service(map_path, workdir / name, model_dir)
    guided = LocalPlanner(model_dir, time_budget_ms=BUDGET_MS, seed=seed)
    plain = LocalPlanner(None, time_budget_ms=BUDGET_MS, seed=seed)
    guided.load()
    plain.load()
    if not guided.guided:
        raise BenchError(f"the int8 model was not loaded from {model_dir}: {guided.model_note}")
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"map": name, "model": guided.model_note, "sizes": {}}
    seconds_per_metre: list[float] = []
    try:
        with httpx.Client(timeout=60) as client:
            for n in sizes:
                rows = []
                for k in range(problems):
                    points = draw_points(client, service, n + 1, rng)
                    real = real_matrix(client, service, points)
                    svc = service_order(client, service, points)
                    loc_g, loc_p = guided.order(points), plain.order(points)
                    t_svc, t_g, t_p = travel(real, svc), travel(real, loc_g), travel(real, loc_p)
                    estimate = travel_time_matrix(points)
                    rows.append({"service_s": t_svc, "edge_int8_s": t_g, "edge_plain_s": t_p,
                                 "edge_int8_estimated_s": travel(estimate, loc_g)})  # fmt: skip
                    iu = np.triu_indices(n + 1, 1)
                    straight = np.asarray([haversine_m(*points[i], *points[j]) for i, j in zip(*iu, strict=True)])
                    ok = np.isfinite(real[iu]) & (straight > 50)
                    seconds_per_metre.extend((real[iu][ok] / straight[ok]).tolist())
                    if (k + 1) % 10 == 0:
                        log(f"{name} n={n}: {k + 1}/{problems}")
                out["sizes"][str(n)] = summarize(rows)
    finally:
        service.stop()
    spm = np.asarray(seconds_per_metre)
    out["real_seconds_per_straight_metre"] = {"median": round(float(np.median(spm)), 4),
                                              "mean": round(float(spm.mean()), 4)}  # fmt: skip
    out["estimate_seconds_per_straight_metre"] = round(DETOUR_FACTOR / (SPEED_KPH / 3.6), 4)
    return out


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    svc = np.asarray([r["service_s"] for r in rows])
    res: dict[str, Any] = {"problems": len(rows), "service_travel_s_mean": round(float(svc.mean()), 1)}
    for key in ("edge_int8", "edge_plain"):
        gap = 100.0 * (np.asarray([r[f"{key}_s"] for r in rows]) - svc) / svc
        res[key] = {"gap_pct_mean": round(float(gap.mean()), 2), "gap_pct_median": round(float(np.median(gap)), 2),
                    "gap_pct_p90": round(float(np.percentile(gap, 90)), 2), "gap_pct_max": round(float(gap.max()), 2),
                    "worse_share": round(float((gap > 0.05).mean()), 3),
                    "better_share": round(float((gap < -0.05).mean()), 3)}  # fmt: skip
    real = np.asarray([r["edge_int8_s"] for r in rows])
    est = np.asarray([r["edge_int8_estimated_s"] for r in rows])
    ratio = est / real
    res["eta_estimate_over_real"] = {"median": round(float(np.median(ratio)), 3),
                                     "p10": round(float(np.percentile(ratio, 10)), 3),
                                     "p90": round(float(np.percentile(ratio, 90)), 3)}  # fmt: skip
    return res


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'map':<20} {'stops':>5} {'n':>4}  {'int8 mean':>9} {'median':>7} {'p90':>7}  "
          f"{'plain mean':>10} {'median':>7}  {'ETA est/real (p10..p90)':>24}")  # fmt: skip
    for res in results:
        for n, s in res["sizes"].items():
            g, p, eta = s["edge_int8"], s["edge_plain"], s["eta_estimate_over_real"]
            print(f"{res['map']:<20} {n:>5} {s['problems']:>4}  {g['gap_pct_mean']:>8.2f}% {g['gap_pct_median']:>6.2f}% "
                  f"{g['gap_pct_p90']:>6.2f}%  {p['gap_pct_mean']:>9.2f}% {p['gap_pct_median']:>6.2f}%  "
                  f"{eta['median']:>8.3f} ({eta['p10']:.3f}..{eta['p90']:.3f})")  # fmt: skip
    for res in results:
        spm = res["real_seconds_per_straight_metre"]
        print(f"{res['map']}: real road seconds per straight-line metre: median {spm['median']}, mean {spm['mean']} "
              f"(the device assumes {res['estimate_seconds_per_straight_metre']})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=60, help="problems per size and map")
    parser.add_argument("--sizes", default="10,20", help="stops per problem, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps", default="helsinki,manhattan_midtown")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    maps = {"helsinki": None, "manhattan_midtown": SHARED / "manhattan_midtown.osm.pbf"}
    chosen = args.maps.split(",")
    unknown = [m for m in chosen if m not in maps]
    if unknown or args.problems < 1 or any(n < 2 for n in sizes):
        print(f"error: maps must be among {', '.join(maps)}; --problems >= 1; sizes >= 2", file=sys.stderr)
        return 2
    missing = [m for m in chosen if maps[m] is not None and not maps[m].is_file()]  # type: ignore[union-attr]
    if missing:
        print(f"error: map file not found for {', '.join(missing)} (expected under {SHARED})", file=sys.stderr)
        return 2
    info = {"machine": machine_info(), "git": git_info(), "versions": versions(["onnxruntime", "numba", "numpy"])}
    t0 = time.perf_counter()
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        work = Path(tmp)
        results = [run_map(m, maps[m], sizes, args.problems, args.seed, work / "models", work) for m in chosen]
    print_table(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"schema": 1, "started": stamp, "args": vars(args), "budget_ms": BUDGET_MS, "depart_at": DEPART_AT,
           "estimate": {"detour_factor": DETOUR_FACTOR, "speed_kph": SPEED_KPH}, "results": results,
           "wall_s": round(time.perf_counter() - t0, 1), **info}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"edge_fallback-{stamp}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "edge_fallback-latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {RESULTS / f'edge_fallback-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
