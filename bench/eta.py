#!/usr/bin/env python
"""ETA benchmark: predicted against real trip durations on the Manhattan midtown map.

Trips: the Kaggle "NYC Taxi Trip Duration" sample of January-April 2016 in
``../shared/data/trip_requests`` (and the DEBS 2013 New Year sample, reported beside),
cleaned by ``gnn_model.eta.trips.clean_mask`` (the same trips for every method). Split by
time, never at random: learn on trips picked up before ``--test-from`` (default April 2016),
test on the later ones. Each trip's prediction is pickup to drop-off at its pickup time, on
the fastest path under the base model, with each method's multipliers applied per 15-minute
bucket of the week exactly as the service applies them.

Methods side by side in one run: the service before learning ("base": speeds plus time lost
at controls), one global factor, per-road-class least squares x hour, per-edge historical
means x hour, the GNN as shipped (3 seeds averaged, recent trips weighted more) and one GNN
with all trips weighted the same (ablation); and OSRM's car profile on the same map (``osrm-routed`` from the
``osrm-bindings`` wheel in a bench-only Python 3.12 venv, ``make osrm-venv``).

Also: the learned profile exported to ONNX (parity with torch), and ``/table`` 100x100
in-process with and without the learned profile applied (same points, same process).

    .venv/bin/python bench/eta.py                   # full run
    .venv/bin/python bench/eta.py --max-epochs 40   # quick run

Writes ``bench/results/eta-<UTC timestamp>.json`` and ``bench/results/eta-latest.json``.
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

from gnn_model.eta.evaluation import scores
from gnn_model.eta.export import export_onnx, onnx_multipliers, torch_multipliers, version_of
from gnn_model.eta.trips import clean_mask, read_trips
from graph_store.learned_profile import LearnedProfile
from graph_store.osm_import import read_osm
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from travel_times.dataset import trip_paths
from travel_times.learn import batch_of, bucketed_predictions, evaluate, fit_methods, prepare

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MAP = DATA / "road_networks" / "manhattan_midtown.osm.pbf"
TRIPS_2016 = DATA / "trip_requests" / "nyc_taxi_2016_kaggle_sample_jan_apr.csv.gz"
TRIPS_2013 = DATA / "trip_requests" / "nyc_taxi_2013-01-01_debs2015_sorted_data_10k.csv"


def osrm_scores(pickups: np.ndarray, dropoffs: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from osrm_peer import OsrmPeer, ensure_venv, osrm_available

    try:
        ensure_venv()
    except Exception as exc:
        return {"skipped": f"OSRM not available: {exc}"}
    reason = osrm_available()
    if reason is not None:
        return {"skipped": reason}
    with OsrmPeer(MAP) as peer:
        pairs = [(a[0], a[1], b[0], b[1]) for a, b in zip(pickups, dropoffs, strict=True)]
        dur, dist = peer.route_many(pairs)
        ok = np.isfinite(dur)
        return {**scores(dur[ok], actual[ok]), "version": peer.version, "no_route": int((~ok).sum()),
                "_distance_m": dist}  # fmt: skip


def table_timing(graph: RoadGraph, learned: LearnedProfile, reps: int) -> dict[str, Any]:
    """In-process ``table`` 100x100 (durations), warm, without and with the learned profile, interleaved."""
    rng = np.random.default_rng(5)
    nodes = rng.choice(graph.node_count, 100, replace=False)
    ph = graph.snap(graph.network.node_lat[nodes] + 2e-5, graph.network.node_lon[nodes], 500.0)
    when = datetime(2016, 4, 12, 17, 20)
    plain, with_learned = RoutingSnapshot(graph, TrafficState()), RoutingSnapshot(graph, TrafficState(learned=learned))
    t0 = time.perf_counter()
    with_learned.edge_weights_ms(datetime(2016, 4, 13, 9, 5))  # a bucket not yet seen: inference + customisation
    cold_ms = (time.perf_counter() - t0) * 1000
    times: dict[str, list[float]] = {"base": [], "learned": []}
    for snap in (plain, with_learned):
        snap.table(ph, ph, when, with_distance=False)
    for _ in range(reps):
        for name, snap in (("base", plain), ("learned", with_learned)):
            t = time.perf_counter()
            snap.table(ph, ph, when, with_distance=False)
            times[name].append((time.perf_counter() - t) * 1000)
    b, lrn = np.median(times["base"]), np.median(times["learned"])
    return {"base_ms_p50": round(float(b), 3), "learned_ms_p50": round(float(lrn), 3),
            "ratio_learned_over_base": round(float(lrn / b), 3), "reps": reps,
            "new_bucket_weights_ms": round(cold_ms, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-from", default="2016-04-01")
    ap.add_argument("--max-epochs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-osrm", action="store_true")
    ap.add_argument("--table-reps", type=int, default=30)
    args = ap.parse_args()
    started = time.perf_counter()
    graph = RoadGraph(read_osm(MAP), name="manhattan_midtown")
    trips = read_trips(TRIPS_2016, "nyc-kaggle")
    prep = prepare(graph, trips)
    t = prep.paths.trips
    order = np.argsort(t.pickup_at, kind="stable")
    is_train = t.pickup_at[order] < np.datetime64(args.test_from)
    train, test = order[is_train], order[~is_train]
    print(f"trips: {prep.read} read, {prep.cleaned} clean, {len(prep.paths)} on the map; "
          f"train {train.size} (< {args.test_from}), test {test.size}", flush=True)  # fmt: skip
    fitted = fit_methods(prep, train, seed=args.seed, max_epochs=args.max_epochs)
    # Ablation: one GNN, every training trip weighing the same (what the ensemble and recency add).
    single = fit_methods(prep, train, seed=args.seed, max_epochs=args.max_epochs, methods=("gnn",), members=1,
                         half_life_days=None)["gnn"]  # fmt: skip
    fitted["gnn_single_unweighted"] = single
    results = evaluate(prep, fitted, test)
    actual = prep.batch.duration_s[test]
    if not args.no_osrm:
        pick = np.column_stack([t.pickup_lat[test], t.pickup_lon[test]])
        drop = np.column_stack([t.dropoff_lat[test], t.dropoff_lon[test]])
        osrm = osrm_scores(pick, drop, actual)
        dist = osrm.pop("_distance_m", None)
        if dist is not None:
            osrm["median_route_m_ratio_ours_over_osrm"] = round(float(np.nanmedian(prep.paths.route_m[test] / dist)), 3)
        results["osrm"] = osrm

    # The 2013 New Year sample (a holiday night, other years' streets), scored with the same fits.
    t13 = read_trips(TRIPS_2013, "nyc-taxi")
    p13 = trip_paths(RoutingSnapshot(graph, TrafficState()), t13.take(clean_mask(t13)), datetime(2016, 1, 4, 3))
    b13 = batch_of(p13)
    new_year = {name: scores(bucketed_predictions(prep, f.multipliers, b13), b13.duration_s)
                for name, f in fitted.items()}  # fmt: skip

    gnn = fitted["gnn"]
    assert gnn.model is not None
    t0 = time.perf_counter()
    onnx_model = export_onnx(gnn.model, prep.inputs)
    export_s = time.perf_counter() - t0
    probe = np.arange(0.0, 7 * 1440.0, 97.0) + 7.5
    parity = float(
        np.max(np.abs(onnx_multipliers(onnx_model, probe) - torch_multipliers(gnn.model, prep.inputs, probe)))
    )
    learned = LearnedProfile(version_of(onnx_model), onnx_model, graph.network.edge_count)
    t0 = time.perf_counter()
    learned.run(np.asarray([7.5], dtype=np.float32))
    infer_ms = (time.perf_counter() - t0) * 1000
    table = table_timing(graph, learned, args.table_reps)

    report = {
        "bench": "eta", "when": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv[1:],
        "machine": machine_info(), "git": git_info(), "versions": versions(["torch", "torch-geometric", "onnxruntime"]),
        "map": MAP.name, "trips": {"read": prep.read, "clean": prep.cleaned, "on_map": len(prep.paths),
                                   "train": int(train.size), "test": int(test.size), "test_from": args.test_from},
        "test": results, "new_year_2013": {"trips": len(p13), **new_year},
        "gnn": {"epochs": gnn.report.epochs if gnn.report else None, "history": gnn.report.history if gnn.report else []},
        "onnx": {"bytes": len(onnx_model), "export_s": round(export_s, 2), "parity_max_abs": parity,
                 "one_bucket_all_edges_ms": round(infer_ms, 2)},
        "table_100x100": table, "total_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    out = REPO / "bench" / "results"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"eta-{stamp}.json", "eta-latest.json"):
        (out / name).write_text(json.dumps(report, indent=1, default=str) + "\n")
    keys = ("trips", "median_ape", "mape", "mae_s", "bias", "p10_p90_coverage")
    print("\n| method | " + " | ".join(keys) + " | 2013 New Year median APE / MAPE |")
    print("|---|" + "---|" * (len(keys) + 1))
    for name, r in results.items():
        ny = new_year.get(name, {})
        ny_s = f"{ny['median_ape']:.1%} / {ny['mape']:.1%}" if ny else "-"
        print(f"| {name} | " + " | ".join(str(r.get(k, "-")) for k in keys) + f" | {ny_s} |")
    print(json.dumps({"onnx": report["onnx"], "table_100x100": table, "total_s": report["total_s"]}))


if __name__ == "__main__":
    main()
