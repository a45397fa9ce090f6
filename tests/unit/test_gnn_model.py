"""The edge-scoring GNN: features, labels, batching, training determinism, the committed checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_model.backends import FeatureBatch, TorchBackend
from gnn_model.features import EDGE_FEATURES, NODE_FEATURES, build_features, edge_labels, local_scores
from gnn_model.model import EdgeScorer, ModelConfig, parameter_count
from gnn_model.search import localize
from gnn_model.training import Example, TrainParams, euclidean_problem, evaluate_model, train, vary, with_end
from routing_core.problem import EndKind

CHECKPOINT = Path(__file__).resolve().parents[2] / "gnn_model" / "artifacts" / "edge_scorer.pt"


@pytest.fixture(scope="module")
def problems():
    rng = np.random.default_rng(7)
    return [vary(euclidean_problem(int(rng.integers(8, 30)), rng, asymmetry=0.2), rng, tw_share=0.5) for _ in range(12)]


def test_features_shapes_and_candidate_graph(problems) -> None:
    for p in problems:
        f = build_features(p)
        # graph nodes: the start, the stops and a fixed end; never a virtual end
        assert f.x.shape == (p.n_nodes, NODE_FEATURES)
        assert f.edge_attr.shape == (f.edge_index.shape[1], EDGE_FEATURES)
        src, dst = f.edge_index
        assert (src != dst).all(), "no self loops"
        assert len(set(zip(src.tolist(), dst.tolist(), strict=True))) == src.size, "no duplicate edges"
        assert f.x[0, 3] == 1.0  # start flag
        assert np.isfinite(f.x).all() and np.isfinite(f.edge_attr).all()


def test_k_nearest_in_both_directions() -> None:
    p = euclidean_problem(30, np.random.default_rng(1), asymmetry=0.5)
    f = build_features(p, k=5)
    edges = set(zip(*f.edge_index.tolist(), strict=True))
    m = p.matrix.copy()
    np.fill_diagonal(m, np.inf)
    for i in range(p.n_nodes):
        for j in np.argsort(m[i])[:5]:
            assert (i, int(j)) in edges  # nearest successors
        for j in np.argsort(m[:, i])[:5]:
            assert (int(j), i) in edges  # nearest predecessors


def test_labels_mark_the_route_edges() -> None:
    p = euclidean_problem(12, np.random.default_rng(3))
    f = build_features(p, k=11)  # complete graph: every route edge is a candidate
    order = tuple(range(1, 12))
    y = edge_labels(f, p, order)
    assert y.sum() == 12  # 11 legs + the return leg
    src, dst = f.edge_index
    marked = set(zip(src[y > 0].tolist(), dst[y > 0].tolist(), strict=True))
    assert (11, 0) in marked and (0, 1) in marked


def test_local_scores_layout_matches_search_layout(problems) -> None:
    for p in problems:
        f = build_features(p)
        scores = np.arange(f.edge_index.shape[1], dtype=np.float64)
        local = local_scores(f, scores)
        assert local.shape == localize(p).D.shape
        if p.end is EndKind.RETURN:
            assert (local[:, 0] == -1e9).all()


def test_batch_equals_one_by_one(problems) -> None:
    torch.manual_seed(0)
    backend = TorchBackend(EdgeScorer().eval(), "test")
    feats = [build_features(p) for p in problems]
    batched = backend.predict(FeatureBatch.of(feats))
    for f, b in zip(feats, batched, strict=True):
        single = backend.predict(FeatureBatch.of([f]))[0]
        np.testing.assert_allclose(b, single, atol=1e-5)


def test_model_is_small() -> None:
    # A model for a 2-core CPU: tens of thousands of parameters, not millions.
    assert 20_000 < parameter_count(EdgeScorer(ModelConfig())) < 200_000


def _examples(seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(10):
        p = with_end(euclidean_problem(12, rng), EndKind.RETURN)
        out.append(Example(p, tuple(range(1, 12)), (0.0, 1.0), "test"))
    return out


def test_training_is_deterministic_for_a_seed() -> None:
    data = _examples(0)
    params = TrainParams(epochs=2, batch_size=4, seed=5)
    _, h1 = train(data[:8], data[8:], ModelConfig(hidden=8, layers=2), params)
    _, h2 = train(data[:8], data[8:], ModelConfig(hidden=8, layers=2), params)
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]


def test_committed_checkpoint_loads_and_reports_its_metrics() -> None:
    if not CHECKPOINT.is_file():
        pytest.fail(f"the trained checkpoint must be committed at {CHECKPOINT}")
    from gnn_model.training import load_checkpoint

    model, meta = load_checkpoint(CHECKPOINT)
    metrics = json.loads((CHECKPOINT.parent / "training_metrics.json").read_text())
    assert metrics["version"] == meta["version"]
    assert 0.0 <= metrics["final_metrics"]["edge_recall"] <= 1.0
    p = euclidean_problem(20, np.random.default_rng(0))
    f = build_features(p)
    out = TorchBackend(model, str(meta["version"])).predict(FeatureBatch.of([f]))[0]
    assert out.shape == (f.edge_index.shape[1],) and np.isfinite(out).all()
    assert evaluate_model(model, [Example(p, tuple(range(1, 20)), (0.0, 1.0), "t")])["edge_recall"] >= 0.0
