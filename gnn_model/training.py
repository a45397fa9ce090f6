"""Training the edge scorer: problems, labels, the loop, metrics, checkpoints.

Problems come from the caller (road matrices are made by ``graph_store``, which this
package must not import) plus Euclidean ones made here. Time windows are built around a
known feasible route, so every windowed problem has a feasible answer. Labels: the
better of PyVRP's route (MIT licence, deterministic iteration budget) and our own search
at a generous budget, so a label is never worse than what the search finds alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gnn_model.features import GraphFeatures, build_features, edge_labels, local_scores
from gnn_model.labels import pyvrp_order
from gnn_model.model import EdgeScorer, ModelConfig
from gnn_model.search import SearchParams, localize, solve
from routing_core.problem import EndKind, Problem, evaluate

Progress = Callable[[str, int, int, dict[str, float]], None]
# The search settings the data is made with, pinned so that later changes to the
# serving defaults do not change the training data (the checkpoint stays reproducible).
DATA_SEARCH = {"n_candidates": 10, "accept_worse": 0.0}


def _quiet(stage: str, done: int, total: int, info: dict[str, float]) -> None:
    return None


# -- problems ---------------------------------------------------------------------------


def euclidean_problem(n: int, rng: np.random.Generator, asymmetry: float = 0.0) -> Problem:
    """n nodes uniform in a 10 km square, 36 km/h straight-line travel, optional asymmetry."""
    xy = rng.uniform(0.0, 10_000.0, size=(n, 2))
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)) / 10.0
    if asymmetry > 0:
        d = d * (1.0 + asymmetry * rng.random((n, n)))
    np.fill_diagonal(d, 0.0)
    return Problem(matrix=d, coords=xy)


def with_end(problem: Problem, kind: EndKind) -> Problem:
    if kind is EndKind.FIXED:
        return Problem(problem.matrix, problem.earliest, problem.latest, problem.service_s, problem.start,
                       EndKind.FIXED, problem.n_nodes - 1, problem.coords)  # fmt: skip
    return Problem(problem.matrix, problem.earliest, problem.latest, problem.service_s, problem.start, kind,
                   None, problem.coords)  # fmt: skip


def with_windows(problem: Problem, rng: np.random.Generator) -> Problem:
    """Add service times and windows around a feasible route (so one exists)."""
    service = np.where(rng.random(problem.n_nodes) < 0.7, rng.uniform(60, 300, problem.n_nodes), 0.0)
    service[problem.start] = 0.0
    base = Problem(problem.matrix, service_s=service, start=problem.start, end=problem.end,
                   end_node=problem.end_node, coords=problem.coords)  # fmt: skip
    route = solve(base, SearchParams(time_limit_ms=1e9, max_iterations=200, seed=int(rng.integers(1 << 30)),
                                     **DATA_SEARCH))  # type: ignore[arg-type]  # fmt: skip
    ev = route.evaluation
    earliest = np.zeros(problem.n_nodes)
    latest = np.full(problem.n_nodes, math.inf)
    for stop, t in zip(ev.order, ev.start_service, strict=True):
        if rng.random() < 0.6:  # some stops have no window
            width = rng.uniform(600, 3600)
            lead = rng.uniform(0, width)
            earliest[stop] = max(0.0, t - lead)
            latest[stop] = earliest[stop] + width if earliest[stop] + width >= t else t
    return Problem(problem.matrix, earliest, latest, service, problem.start, problem.end, problem.end_node,
                   problem.coords)  # fmt: skip


def vary(problem: Problem, rng: np.random.Generator, tw_share: float = 0.3) -> Problem:
    """Mix end kinds (70% return, 15% open, 15% fixed) and windows (``tw_share``)."""
    u = rng.random()
    kind = EndKind.RETURN if u < 0.7 else (EndKind.OPEN if u < 0.85 else EndKind.FIXED)
    out = with_end(problem, kind)
    return with_windows(out, rng) if rng.random() < tw_share else out


# -- labels ------------------------------------------------------------------------------


@dataclass
class Example:
    problem: Problem
    order: tuple[int, ...]
    cost: tuple[float, float]  # (lateness, travel) of the label
    source: str
    features: GraphFeatures = field(init=False)
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.features = build_features(self.problem)
        self.labels = edge_labels(self.features, self.problem, self.order)


def _label_one(args: tuple[Problem, int, int, int]) -> tuple[tuple[int, ...], str]:
    problem, seed, pyvrp_iterations, search_iterations = args
    candidates = []
    try:
        order = pyvrp_order(problem, max_iterations=pyvrp_iterations, seed=seed)
        candidates.append((evaluate(problem, order).cost(), 0, order, "pyvrp"))
    except RuntimeError:
        pass
    ours = solve(problem, SearchParams(time_limit_ms=1e9, max_iterations=search_iterations, seed=seed,
                                       **DATA_SEARCH))  # type: ignore[arg-type]  # fmt: skip
    candidates.append((ours.evaluation.cost(), 1, ours.order, "search"))
    best = min(candidates)
    return best[2], best[3]


def label_problems(problems: Sequence[Problem], seed: int, pyvrp_iterations: int = 1000,
                   search_iterations: int = 4000, workers: int = 2, progress: Progress = _quiet) -> list[Example]:  # fmt: skip
    """Label every problem (in parallel processes); deterministic for a seed."""
    jobs = [(p, seed + i, pyvrp_iterations, search_iterations) for i, p in enumerate(problems)]
    out: list[Example] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (order, source) in enumerate(pool.map(_label_one, jobs, chunksize=4)):
            p = problems[i]
            out.append(Example(p, order, evaluate(p, order).cost(), source))
            progress("label", i + 1, len(jobs), {})
    return out


# -- training ------------------------------------------------------------------------------


def to_batch(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint union of several graphs: (x, edge_index, edge_attr, y)."""
    from torch_geometric.data import Batch, Data

    data = [
        Data(x=torch.from_numpy(e.features.x), edge_index=torch.from_numpy(e.features.edge_index),
             edge_attr=torch.from_numpy(e.features.edge_attr), y=torch.from_numpy(e.labels))
        for e in examples
    ]  # fmt: skip
    batch = Batch.from_data_list(data)
    return batch.x, batch.edge_index, batch.edge_attr, batch.y


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


def scores_for(model: EdgeScorer, example_features: GraphFeatures) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(example_features.x), torch.from_numpy(example_features.edge_index),
                       torch.from_numpy(example_features.edge_attr))  # fmt: skip
    return logits.numpy()


def evaluate_model(model: EdgeScorer, examples: Sequence[Example]) -> dict[str, float]:
    """Edge precision/recall (logit > 0) and decoded tour gap (greedy on scores, no search)."""
    from gnn_model.search import _construct, _objective

    model.eval()
    tp = fp = fn = 0.0
    gaps = []
    for ex in examples:
        logits = scores_for(model, ex.features)
        pred = logits > 0
        truth = ex.labels > 0.5
        tp += float((pred & truth).sum())
        fp += float((pred & ~truth).sum())
        fn += float((~pred & truth).sum())
        lp = localize(ex.problem)
        tour = _construct(lp.D, local_scores(ex.features, logits), True)
        decoded = float(_objective(lp.D, tour, lp.early, lp.late, lp.serv, False))
        gaps.append(decoded / ex.cost[1] - 1.0 if ex.cost[1] > 0 else 0.0)
    return {
        "edge_precision": tp / (tp + fp) if tp + fp else 0.0,
        "edge_recall": tp / (tp + fn) if tp + fn else 0.0,
        "decoded_gap_pct": 100.0 * float(np.mean(gaps)) if gaps else 0.0,
    }


def train(train_set: Sequence[Example], val_set: Sequence[Example], config: ModelConfig, params: TrainParams,
          progress: Progress = _quiet) -> tuple[EdgeScorer, list[dict[str, float]]]:  # fmt: skip
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = EdgeScorer(config)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    positives = float(sum(e.labels.sum() for e in train_set))
    total = float(sum(e.labels.size for e in train_set))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((total - positives) / max(positives, 1.0)))
    history: list[dict[str, float]] = []
    for epoch in range(params.epochs):
        model.train()
        order = rng.permutation(len(train_set))
        losses = []
        for start in range(0, len(order), params.batch_size):
            chunk = [train_set[i] for i in order[start : start + params.batch_size]]
            x, ei, ea, y = to_batch(chunk)
            opt.zero_grad()
            loss = loss_fn(model(x, ei, ea), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        metrics = {"epoch": float(epoch + 1), "loss": float(np.mean(losses)), **evaluate_model(model, val_set)}
        history.append(metrics)
        progress("train", epoch + 1, params.epochs, metrics)
    return model, history


# -- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(path: Path, model: EdgeScorer, meta: dict[str, object]) -> str:
    """Write the model and its metadata; returns the checkpoint's version (content hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    version = digest.hexdigest()[:16]
    torch.save({"state_dict": state, "config": model.config.to_dict(), "version": version,
                "meta": json.loads(json.dumps(meta, default=str))}, path)  # fmt: skip
    return version


def load_checkpoint(path: Path) -> tuple[EdgeScorer, dict[str, object]]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = EdgeScorer(ModelConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, {"version": blob["version"], **blob["meta"]}
