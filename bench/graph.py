#!/usr/bin/env python
"""Road-graph benchmark: import, snapping, /table and /route over HTTP, next to in-process CCH and Dijkstra.

For each map in ``../shared/data/road_networks``:

1. import: ``routing db upgrade`` then ``routing import-map FILE`` (subprocesses, fresh SQLite
   file in a temp dir), plus ``read_osm`` parse-only time in this process;
2. ``routing serve`` as a subprocess on that database, wait for ``/readyz`` 200;
3. from this process, one keep-alive ``httpx.Client`` on loopback: ``/nearest`` (sequential),
   ``/table`` 10x10, 50x50, 100x100 (durations) and 100x100 with ``annotations=duration,distance``,
   ``/route`` with 2 and 10 coordinates (``overview=full&geometries=polyline6``);
4. in this process, on the same point sets (same map loaded from the same database): the
   handler's stages (parse, snap, phantom table, serialisation), the node-level CCH
   (``snapshot.node_durations``) and plain Dijkstra from each source
   (``scipy.sparse.csgraph.dijkstra`` over the same integer-ms weights), checked equal.

HTTP and in-process measurements of one point set run back to back, so that load from other
processes on the machine hits both alike: compare ratios from one run, not absolute numbers
from two runs.

    .venv/bin/python bench/graph.py                  # full run (both maps, 50 repetitions)
    .venv/bin/python bench/graph.py --quick          # smoke run (small counts)
    .venv/bin/python bench/graph.py --maps baltimore --reps 20

Writes ``bench/results/graph-<UTC timestamp>.json`` and ``bench/results/graph-latest.json``
(a full run only; a ``--quick`` run writes ``graph-quick-<timestamp>.json``), and prints the
headline numbers next to those of the previous ``graph-latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
from common import BenchError, free_port, git_info, machine_info, routing_bin, sigterm_as_exit, versions
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from starlette.requests import Request

from graph_store.osm_import import read_osm
from graph_store.repository import MapRepository, make_engine
from graph_store.routing_graph import RoutingSnapshot
from graph_store.service import RoadGraphService
from routing_api import osrm
from routing_api.auth import TokenStore
from routing_api.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MAPS_DIR = DATA / "road_networks"
DEFAULT_MAPS = ("baltimore", "manhattan_midtown")
RESULTS = REPO / "bench" / "results"
SNAP_LIMIT_M = 500.0  # the service's default ROUTING_SNAP_MAX_DISTANCE_M
POINT_MAX_M = 450.0  # random points are kept when they snap closer than this (margin under the limit)
TABLE_SIZES = (10, 50, 100)
SCHEMA = 1


# -- small helpers ------------------------------------------------------------------------


def summary(samples_s: list[float]) -> dict[str, Any]:
    """Latency summary in milliseconds, raw samples kept for later comparison."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "max_ms": round(float(ms.max()), 3),
        "samples_ms": [round(float(v), 3) for v in ms],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``routing ARGS``; (wall seconds, stdout). A non-zero exit stops the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.run([routing_bin(), *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"`routing {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return wall, proc.stdout.strip()


def coords_text(lat: np.ndarray, lon: np.ndarray) -> str:
    return ";".join(f"{lo:.6f},{la:.6f}" for la, lo in zip(lat.tolist(), lon.tolist(), strict=True))


def check_ok(resp: httpx.Response, what: str) -> dict[str, Any]:
    body = resp.json()
    if resp.status_code != 200 or body.get("code") != "Ok":
        raise BenchError(f"{what}: HTTP {resp.status_code} {str(body)[:300]}")
    return body


def as_matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.asarray([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


# -- the server subprocess -----------------------------------------------------------------


class Server:
    """``routing serve`` on a free loopback port; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> Server:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [routing_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def wait_ready(self, client: httpx.Client, timeout_s: float = 180.0) -> float:
        """Seconds from start until /readyz answers 200."""
        assert self.proc is not None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise BenchError(f"`routing serve` exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if client.get("/readyz").status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise BenchError(f"`routing serve` not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()


class CpuSample:
    """Jiffies from /proc: the whole machine, this process, the server; to tell how busy others kept the CPUs."""

    def __init__(self, wall: float, machine_busy: int, ours: int) -> None:
        self.wall, self.machine_busy, self.ours = wall, machine_busy, ours

    @staticmethod
    def _proc_jiffies(pid: int | str) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return 0

    @classmethod
    def take(cls, server_pid: int) -> CpuSample:
        busy = 0
        with contextlib.suppress(OSError, IndexError, ValueError):
            v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            busy = sum(v) - v[3] - v[4]  # all but idle and iowait
        return cls(time.perf_counter(), busy, cls._proc_jiffies("self") + cls._proc_jiffies(server_pid))

    def until(self, end: CpuSample) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        wall = end.wall - self.wall
        cpus = len(os.sched_getaffinity(0))
        busy = (end.machine_busy - self.machine_busy) / hz
        ours = (end.ours - self.ours) / hz
        return {"wall_s": round(wall, 2), "cpus": cpus, "machine_busy_cpu_s": round(busy, 2),
                "bench_and_server_cpu_s": round(ours, 2),
                "others_share": round(max(0.0, busy - ours) / (wall * cpus), 3) if wall > 0 else 0.0}  # fmt: skip


# -- random points -----------------------------------------------------------------------


class Points:
    """Random points in the map's bbox that snap within POINT_MAX_M (pre-filtered in-process)."""

    def __init__(self, snapshot: RoutingSnapshot, rng: np.random.Generator) -> None:
        self.graph = snapshot.graph
        self.rng = rng

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        lat0, lon0, lat1, lon1 = self.graph.bbox
        lats: list[np.ndarray] = []
        lons: list[np.ndarray] = []
        have = 0
        while have < n:
            m = max(16, 2 * (n - have))
            lat = np.round(self.rng.uniform(lat0, lat1, m), 6)
            lon = np.round(self.rng.uniform(lon0, lon1, m), 6)
            ph = self.graph.snap(lat, lon, float("inf"))
            keep = ph.distance_m <= POINT_MAX_M
            lats.append(lat[keep])
            lons.append(lon[keep])
            have += int(keep.sum())
        return np.concatenate(lats)[:n], np.concatenate(lons)[:n]


# -- in-process pieces ---------------------------------------------------------------------


def fake_request(path: str, query: str, container: Any) -> Request:
    """A Starlette request for calling an endpoint function directly (no ASGI, no threads)."""
    app = SimpleNamespace(state=SimpleNamespace(container=container))
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query.encode(), "headers": [], "app": app}  # fmt: skip
    return Request(scope)


def nearest_nodes(snapshot: RoutingSnapshot, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """For each point, the graph node at the nearer end of the edge it snaps to."""
    g = snapshot.graph
    ph = g.snap(lat, lon, SNAP_LIMIT_M)
    return np.where(ph.fraction < 0.5, g.edge_source[ph.edge], g.edge_target[ph.edge]).astype(np.int64)


def serialise_like_handler(snapshot: RoutingSnapshot, ph: Any, durations: np.ndarray) -> bytes:
    idx = np.arange(len(ph))
    body = {"code": "Ok", "durations": osrm._matrix(durations), "sources": osrm._waypoints(snapshot, ph, idx),
            "destinations": osrm._waypoints(snapshot, ph, idx), **osrm._versions(snapshot)}  # fmt: skip
    return bytes(osrm.osrm_json(body).body)


# -- one map -------------------------------------------------------------------------------


def bench_map(path: Path, cfg: SimpleNamespace, workdir: Path, rng: np.random.Generator) -> dict[str, Any]:
    name = path.name.removesuffix(".osm.pbf")
    out: dict[str, Any] = {"file": str(path.relative_to(DATA.parent)), "file_bytes": path.stat().st_size}
    log = lambda msg: print(f"[{name}] {msg}", flush=True)  # noqa: E731

    # 1. import ---------------------------------------------------------------------------
    parse_s, network = timed(lambda: read_osm(path))
    out["nodes"], out["edges"] = network.node_count, network.edge_count
    out["parse_s"] = round(parse_s, 4)
    db = workdir / f"{name}.sqlite3"
    url = f"sqlite:///{db}"
    env = {**os.environ, "ROUTING_DATABASE_URL": url, "ROUTING_LOG_LEVEL": "warning", "ROUTING_ENVIRONMENT": "test"}
    out["db_upgrade_s"] = round(run_cli(["db", "upgrade"], env)[0], 4)
    import_s, import_msg = run_cli(["import-map", str(path)], env)
    out["import_map_s"] = round(import_s, 4)
    out["import_map_output"] = import_msg
    out["cli_floor_s"] = round(run_cli(["maps", "list"], env)[0], 4)  # CLI start-up + one query: the floor
    out["sqlite_bytes"] = db.stat().st_size
    log(f"{out['nodes']} nodes, {out['edges']} edges; parse {parse_s:.2f} s, import-map {import_s:.2f} s")

    # The same map as the server sees it: loaded from the same database by the same code.
    engine = make_engine(url)
    svc = RoadGraphService(MapRepository(engine))
    out["load_from_db_s"] = round(timed(svc.load_active)[0], 4)
    snapshot = svc.snapshot
    graph = snapshot.graph
    if graph.node_count != network.node_count or graph.network.edge_count != network.edge_count:
        raise BenchError("the stored map differs from read_osm's network")
    when = datetime.now(UTC)
    weights = snapshot.edge_weights_ms(when)
    csr = csr_matrix((weights.astype(np.float64), (graph.edge_source, graph.edge_target)),
                     shape=(graph.node_count, graph.node_count))  # fmt: skip
    container = SimpleNamespace(graph=svc, settings=Settings(database_url=url))
    token = TokenStore(engine).create("dispatcher", name="bench", rate_per_s=0)
    points = Points(snapshot, rng)

    # In-process snapping throughput: one call, 10,000 points (3 runs, median).
    lat, lon = points.draw(cfg.inproc_snaps)
    graph.snap(lat[:100], lon[:100], SNAP_LIMIT_M)
    runs = [timed(lambda: graph.snap(lat, lon, SNAP_LIMIT_M))[0] for _ in range(3)]
    out["inproc_snap"] = {"points": cfg.inproc_snaps, "runs_s": [round(r, 4) for r in runs],
                          "per_s": round(cfg.inproc_snaps / float(np.median(runs)), 1)}  # fmt: skip
    log(f"in-process snap: {out['inproc_snap']['per_s']:.0f}/s")

    # 2. server ---------------------------------------------------------------------------
    with (
        Server(env, workdir / f"{name}-serve.log") as server,
        httpx.Client(base_url=server.base_url, timeout=120.0, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        out["serve_ready_s"] = round(server.wait_ready(client), 3)
        log(f"server ready on :{server.port} in {out['serve_ready_s']:.2f} s")
        assert server.proc is not None
        cpu0 = CpuSample.take(server.proc.pid)
        try:
            out["http"], out["inproc"], out["checks"] = bench_http(
                client, snapshot, container, points, csr, when, cfg, log
            )
            out["cpu"] = cpu0.until(CpuSample.take(server.proc.pid))
            log(f"measurement phase: {out['cpu']['wall_s']:.1f} s; other processes used "
                f"{out['cpu']['others_share']:.0%} of the machine's CPU")  # fmt: skip
        except BaseException:
            tail = server.log_tail()
            if tail:
                print(f"--- server log ({server.log_path}) ---\n{tail}", file=sys.stderr)
            raise
    engine.dispose()
    if cfg.profile:
        out["profile"] = profile_handlers(snapshot, container, points, cfg)
    return out


def bench_http(client: httpx.Client, snapshot: RoutingSnapshot, container: Any, points: Points, csr: csr_matrix,
               when: datetime, cfg: SimpleNamespace, log: Callable[[str], None]) -> tuple[dict, dict, dict]:  # fmt: skip
    graph = snapshot.graph
    http: dict[str, Any] = {}
    inproc: dict[str, Any] = {}
    checks: dict[str, Any] = {"table_http_vs_inproc_max_abs_s": 0.0, "dijkstra_vs_cch_max_abs_ms": 0.0}

    # Floor of the HTTP stack: a trivial sync endpoint through uvicorn + Starlette + the thread pool.
    for _ in range(cfg.warmup):
        client.get("/healthz")
    samples = []
    for _ in range(cfg.nearest_n):
        dt, r = timed(lambda: client.get("/healthz"))
        if r.status_code != 200:
            raise BenchError(f"/healthz: HTTP {r.status_code}")
        samples.append(dt)
    http["healthz"] = summary(samples)

    # /nearest, sequential.
    lat, lon = points.draw(cfg.warmup + cfg.nearest_n)
    urls = [f"/nearest/v1/driving/{lo:.6f},{la:.6f}" for la, lo in zip(lat.tolist(), lon.tolist(), strict=True)]
    for u in urls[: cfg.warmup]:
        check_ok(client.get(u), "nearest warm-up")
    samples = []
    t_all = time.perf_counter()
    for u in urls[cfg.warmup :]:
        dt, r = timed(lambda u=u: client.get(u))
        samples.append(dt)
        check_ok(r, "nearest")
    total = time.perf_counter() - t_all
    http["nearest"] = {**summary(samples), "per_s": round(cfg.nearest_n / total, 1),
                       "per_s_excluding_client_checks": round(cfg.nearest_n / sum(samples), 1)}  # fmt: skip
    one = [
        timed(lambda i=i: graph.snap(lat[i : i + 1], lon[i : i + 1], SNAP_LIMIT_M))[0]
        for i in range(cfg.warmup, lat.size)
    ]
    inproc["snap_one_point"] = summary(one)
    log(f"/nearest: {http['nearest']['per_s']:.0f}/s (median {http['nearest']['median_ms']:.2f} ms); "
        f"/healthz median {http['healthz']['median_ms']:.2f} ms")  # fmt: skip

    # /table: durations only (OSRM's default), then durations + distances at 100x100.
    for n in (*TABLE_SIZES, "100+distance"):
        size = 100 if n == "100+distance" else int(n)
        with_distance = n == "100+distance"
        key = f"{size}x{size}" + ("_distance" if with_distance else "")
        params = {"annotations": "duration,distance"} if with_distance else {}
        for _ in range(cfg.table_warmup):
            wl, wo = points.draw(size)
            check_ok(client.get(f"/table/v1/driving/{coords_text(wl, wo)}", params=params), f"table {key} warm-up")
            snapshot.table(
                graph.snap(wl, wo, SNAP_LIMIT_M), graph.snap(wl, wo, SNAP_LIMIT_M), when, with_distance=with_distance
            )
        h: list[float] = []
        st: dict[str, list[float]] = {
            k: [] for k in ("handler", "parse", "snap", "table", "serialise", "cch_nodes", "dijkstra")
        }
        body_bytes = url_bytes = 0
        for _ in range(cfg.reps):
            la, lo = points.draw(size)
            text = coords_text(la, lo)
            url_bytes = len(f"/table/v1/driving/{text}")
            dt, r = timed(lambda text=text, params=params: client.get(f"/table/v1/driving/{text}", params=params))
            body = check_ok(r, f"table {key}")
            body_bytes = len(r.content)
            h.append(dt)
            # The real endpoint function, called directly on the same map (no ASGI, no thread hop).
            query = "annotations=duration,distance" if with_distance else ""
            req = fake_request(f"/table/v1/driving/{text}", query, container)
            dt, resp = timed(lambda text=text, req=req: osrm.table("driving", text, req))
            if resp.status_code != 200:
                raise BenchError(f"in-process table {key}: {bytes(resp.body)[:300]!r}")
            st["handler"].append(dt)
            # Its stages.
            dt, (plat, plon) = timed(lambda text=text: osrm.parse_coordinates(text))
            st["parse"].append(dt)
            dt, ph = timed(lambda plat=plat, plon=plon: graph.snap(plat, plon, SNAP_LIMIT_M))
            st["snap"].append(dt)
            dt, (dur, _dist) = timed(lambda ph=ph, wd=with_distance: snapshot.table(ph, ph, when, with_distance=wd))
            st["table"].append(dt)
            st["serialise"].append(timed(lambda ph=ph, dur=dur: serialise_like_handler(snapshot, ph, dur))[0])
            diff = np.abs(as_matrix(body["durations"]) - np.round(dur, 1))
            if np.isnan(diff).any() and not np.array_equal(np.isnan(diff), ~np.isfinite(dur)):
                raise BenchError(f"table {key}: HTTP and in-process disagree on reachability")
            checks["table_http_vs_inproc_max_abs_s"] = max(
                checks["table_http_vs_inproc_max_abs_s"], float(np.nanmax(diff))
            )
            if not with_distance:
                # Node level: CCH many-to-many vs plain Dijkstra from each source, same nodes, same ms weights.
                nodes = nearest_nodes(snapshot, plat, plon)
                dt, cch = timed(lambda nodes=nodes: snapshot.node_durations(nodes, nodes, when))
                st["cch_nodes"].append(dt)
                dt, dj = timed(lambda nodes=nodes: dijkstra(csr, directed=True, indices=nodes)[:, nodes])
                st["dijkstra"].append(dt)
                checks["dijkstra_vs_cch_max_abs_ms"] = max(
                    checks["dijkstra_vs_cch_max_abs_ms"], float(np.max(np.abs(dj - cch * 1000.0)))
                )
        http[f"table_{key}"] = {**summary(h), "url_bytes": url_bytes, "response_bytes": body_bytes}
        inproc[f"table_{key}"] = {k: summary(v) for k, v in st.items() if v}
        if st["dijkstra"]:
            inproc[f"table_{key}"]["dijkstra_over_cch"] = round(
                float(np.median(st["dijkstra"]) / np.median(st["cch_nodes"])), 2
            )
        log(f"/table {key}: median {http[f'table_{key}']['median_ms']:.2f} ms, p90 {http[f'table_{key}']['p90_ms']:.2f} ms; "
            f"handler {inproc[f'table_{key}']['handler']['median_ms']:.2f} ms"
            + (f", CCH {inproc[f'table_{key}']['cch_nodes']['median_ms']:.2f} ms, "
               f"Dijkstra {inproc[f'table_{key}']['dijkstra']['median_ms']:.2f} ms" if st["dijkstra"] else ""))  # fmt: skip

    # /route, overview=full&geometries=polyline6.
    params = {"overview": "full", "geometries": "polyline6"}
    for size in (2, 10):
        for _ in range(cfg.table_warmup):
            wl, wo = points.draw(size)
            check_ok(client.get(f"/route/v1/driving/{coords_text(wl, wo)}", params=params), f"route {size} warm-up")
        h, hd = [], []
        for _ in range(cfg.reps):
            la, lo = points.draw(size)
            text = coords_text(la, lo)
            dt, r = timed(lambda text=text: client.get(f"/route/v1/driving/{text}", params=params))
            check_ok(r, f"route {size}")
            h.append(dt)
            req = fake_request(f"/route/v1/driving/{text}", "overview=full&geometries=polyline6", container)
            dt, resp = timed(lambda text=text, req=req: osrm.route("driving", text, req))
            if resp.status_code != 200:
                raise BenchError(f"in-process route {size}: {bytes(resp.body)[:300]!r}")
            hd.append(dt)
        http[f"route_{size}"] = summary(h)
        inproc[f"route_{size}"] = {"handler": summary(hd)}
        log(f"/route {size} coords: median {http[f'route_{size}']['median_ms']:.2f} ms; "
            f"handler {inproc[f'route_{size}']['handler']['median_ms']:.2f} ms")  # fmt: skip
    return http, inproc, checks


def profile_handlers(snapshot: RoutingSnapshot, container: Any, points: Points, cfg: SimpleNamespace) -> dict[str, str]:
    """cProfile of the endpoint functions called directly (100x100 table, with and without distances)."""
    out = {}
    for key, query in (("table_100x100", ""), ("table_100x100_distance", "annotations=duration,distance")):
        sets = [points.draw(100) for _ in range(cfg.reps)]
        prof = cProfile.Profile()
        for la, lo in sets:
            text = coords_text(la, lo)
            req = fake_request(f"/table/v1/driving/{text}", query, container)
            prof.enable()
            osrm.table("driving", text, req)
            prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        out[key] = buf.getvalue()
    return out


# -- report --------------------------------------------------------------------------------


def _get(d: dict[str, Any], path: str) -> float | None:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) else None


# (label, path under a map's result, format)
ROWS: list[tuple[str, str, str]] = [
    ("nodes (largest SCC)", "nodes", "{:.0f}"),
    ("edges", "edges", "{:.0f}"),
    ("read_osm parse, s", "parse_s", "{:.2f}"),
    ("`routing import-map` wall, s", "import_map_s", "{:.2f}"),
    ("`routing maps list` wall (CLI floor), s", "cli_floor_s", "{:.2f}"),
    ("`routing serve` start to /readyz 200, s", "serve_ready_s", "{:.2f}"),
    ("CPU share used by other processes during the measurements", "cpu.others_share", "{:.0%}"),
    ("/healthz median, ms (HTTP floor)", "http.healthz.median_ms", "{:.2f}"),
    ("/nearest sequential, snaps/s", "http.nearest.per_s", "{:.0f}"),
    ("/nearest median, ms", "http.nearest.median_ms", "{:.2f}"),
    ("in-process RoadGraph.snap, 1 point per call, median ms", "inproc.snap_one_point.median_ms", "{:.3f}"),
    ("in-process RoadGraph.snap (10,000 pts, 1 call), snaps/s", "inproc_snap.per_s", "{:.0f}"),
    ("/table 10x10 median / p90, ms", "http.table_10x10", "pair"),
    ("/table 50x50 median / p90, ms", "http.table_50x50", "pair"),
    ("/table 100x100 median / p90, ms", "http.table_100x100", "pair"),
    ("/table 100x100 duration,distance median / p90, ms", "http.table_100x100_distance", "pair"),
    ("/route 2 coords (full, polyline6) median, ms", "http.route_2.median_ms", "{:.2f}"),
    ("/route 10 coords (full, polyline6) median, ms", "http.route_10.median_ms", "{:.2f}"),
    ("in-process 50x50 Dijkstra (scipy) median, ms", "inproc.table_50x50.dijkstra.median_ms", "{:.2f}"),
    ("in-process 50x50 CCH node_durations median, ms", "inproc.table_50x50.cch_nodes.median_ms", "{:.2f}"),
    ("50x50 Dijkstra / CCH", "inproc.table_50x50.dijkstra_over_cch", "{:.1f}x"),
    ("in-process 100x100 Dijkstra (scipy) median, ms", "inproc.table_100x100.dijkstra.median_ms", "{:.2f}"),
    ("in-process 100x100 CCH node_durations median, ms", "inproc.table_100x100.cch_nodes.median_ms", "{:.2f}"),
    ("100x100 Dijkstra / CCH", "inproc.table_100x100.dijkstra_over_cch", "{:.1f}x"),
    (
        "in-process 100x100 table handler (called directly) median, ms",
        "inproc.table_100x100.handler.median_ms",
        "{:.2f}",
    ),
    ("  of which parse coordinates, ms", "inproc.table_100x100.parse.median_ms", "{:.2f}"),
    ("  of which snap 100 points, ms", "inproc.table_100x100.snap.median_ms", "{:.2f}"),
    ("  of which phantom table (CCH + combine), ms", "inproc.table_100x100.table.median_ms", "{:.2f}"),
    ("  of which waypoints + JSON, ms", "inproc.table_100x100.serialise.median_ms", "{:.2f}"),
    ("HTTP 100x100 / in-process CCH node_durations", "derived.http_over_cch_100", "{:.1f}x"),
    ("HTTP 100x100 / in-process handler", "derived.http_over_handler_100", "{:.2f}x"),
    (
        "in-process 100x100 duration,distance handler median, ms",
        "inproc.table_100x100_distance.handler.median_ms",
        "{:.2f}",
    ),
    ("in-process route 2 coords handler median, ms", "inproc.route_2.handler.median_ms", "{:.2f}"),
    ("in-process route 10 coords handler median, ms", "inproc.route_10.handler.median_ms", "{:.2f}"),
]


def derive(m: dict[str, Any]) -> None:
    http, inproc = m["http"], m["inproc"]
    m["derived"] = {
        "http_over_cch_100": round(
            http["table_100x100"]["median_ms"] / inproc["table_100x100"]["cch_nodes"]["median_ms"], 2
        ),
        "http_over_handler_100": round(
            http["table_100x100"]["median_ms"] / inproc["table_100x100"]["handler"]["median_ms"], 3
        ),
        "http_over_cch_50": round(
            http["table_50x50"]["median_ms"] / inproc["table_50x50"]["cch_nodes"]["median_ms"], 2
        ),
    }


def cell(m: dict[str, Any], path: str, fmt: str) -> str:
    if fmt == "pair":
        a, b = _get(m, path + ".median_ms"), _get(m, path + ".p90_ms")
        return "-" if a is None or b is None else f"{a:.2f} / {b:.2f}"
    v = _get(m, path)
    return "-" if v is None else fmt.format(v)


def table_markdown(maps: dict[str, dict[str, Any]]) -> str:
    names = list(maps)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, path, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(maps[n], path, fmt) for n in names) + " |")
    return "\n".join(lines)


def comparison_markdown(prev: dict[str, Any], cur: dict[str, Any]) -> str:
    lines = [f"Compared with {prev.get('timestamp', '?')} (new/old: below 1 is faster for times, above 1 for rates):", "",
             "| metric | map | old | new | new/old |", "|---|---|---:|---:|---:|"]  # fmt: skip
    for name, m in cur["maps"].items():
        pm = prev.get("maps", {}).get(name)
        if pm is None:
            continue
        for label, path, fmt in ROWS:
            if fmt == "pair":
                label, path, fmt = label.replace(" / p90", ""), path + ".median_ms", "{:.2f}"
            a, b = _get(pm, path), _get(m, path)
            if a is None or b is None or a == 0 or path in ("nodes", "edges"):
                continue
            lines.append(f"| {label} | {name} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} |")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--maps", default=",".join(DEFAULT_MAPS),
                   help=f"comma-separated map names under {MAPS_DIR} (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--reps", type=int, default=None, help="repetitions per /table and /route case (default 50; 5 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, does not update graph-latest.json")
    p.add_argument("--seed", type=int, default=20240601, help="random seed for the point sets")
    p.add_argument("--profile", action="store_true", help="also cProfile the /table handler (100x100) in-process")
    p.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not MAPS_DIR.is_dir():
        print(f"error: reference maps not found: {MAPS_DIR} (expected ../shared/data/road_networks next to the repo)",
              file=sys.stderr)  # fmt: skip
        return 2
    names = [n.strip().removesuffix(".osm.pbf") for n in args.maps.split(",") if n.strip()]
    paths = [MAPS_DIR / f"{n}.osm.pbf" for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: map file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    quick = args.quick
    reps = args.reps if args.reps is not None else (5 if quick else 50)
    if reps < 1:
        print("error: --reps must be >= 1", file=sys.stderr)
        return 2
    cfg = SimpleNamespace(
        reps=reps, quick=quick, profile=args.profile,
        nearest_n=50 if quick else 500, inproc_snaps=1000 if quick else 10_000,
        warmup=5 if quick else 20, table_warmup=2 if quick else 5,
    )  # fmt: skip
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": "bench/graph.py", "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": quick,
        "options": {"reps": reps, "seed": args.seed, "nearest_n": cfg.nearest_n, "inproc_snaps": cfg.inproc_snaps,
                    "warmup": cfg.warmup, "table_warmup": cfg.table_warmup, "point_max_m": POINT_MAX_M,
                    "snap_limit_m": SNAP_LIMIT_M},
        "machine": machine_info(), "versions": versions(("numpy", "scipy", "pyroutingkit", "fastapi", "starlette", "uvicorn", "h11", "httptools", "uvloop", "httpx", "orjson", "osmium", "sqlalchemy")), "git": git_info(), "maps": {},
    }  # fmt: skip
    print(
        f"bench/graph.py: maps {', '.join(names)}; {reps} reps; load {result['machine']['loadavg_start']}", flush=True
    )
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    try:
        with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
            for name, path in zip(names, paths, strict=True):
                m = bench_map(path, cfg, Path(tmp), rng)
                derive(m)
                result["maps"][name] = m
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t0, 1)

    print()
    print(table_markdown(result["maps"]))
    for name, m in result["maps"].items():
        print(f"\n[{name}] checks: {m['checks']}")
        for key, text in m.get("profile", {}).items():
            print(f"\n[{name}] cProfile {key} (tottime, top 15):\n{text}")
    latest = RESULTS / "graph-latest.json"
    if latest.is_file():
        with contextlib.suppress(ValueError, OSError):
            prev = json.loads(latest.read_text())
            if prev.get("schema") == SCHEMA:
                print("\n" + comparison_markdown(prev, result))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        target = RESULTS / (f"graph-quick-{stamp}.json" if quick else f"graph-{stamp}.json")
        text = json.dumps(result, indent=1) + "\n"
        target.write_text(text)
        if not quick:
            latest.write_text(text)
        print(f"\nwrote {target.relative_to(REPO)}" + ("" if quick else f" and {latest.relative_to(REPO)}"))
    print(
        f"wall {result['wall_s']:.0f} s; load {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
