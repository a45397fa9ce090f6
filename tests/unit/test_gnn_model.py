"""The edge-scoring GNN: features, labels, batching, training determinism, the committed checkpoint,
and the dense twin that is exported and served (same function, no scatter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_model.backends import FeatureBatch, TorchBackend
from gnn_model.dense import DenseEdgeScorer
from gnn_model.dense_layout import dense_inputs
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


def _mixed_batch(seed: int, sizes: list[int]) -> FeatureBatch:
    rng = np.random.default_rng(seed)
    problems = [
        vary(euclidean_problem(n, rng, asymmetry=0.3 * (i % 2)), rng, tw_share=0.3) for i, n in enumerate(sizes)
    ]
    return FeatureBatch.of([build_features(p) for p in problems])


def _reference(model: EdgeScorer, x: np.ndarray, edge_index: np.ndarray, edge_attr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x), torch.from_numpy(edge_index), torch.from_numpy(edge_attr)).numpy()


def test_dense_inputs_list_each_nodes_incoming_edges() -> None:
    x = np.zeros((4, NODE_FEATURES), dtype=np.float32)
    edge_index = np.array([[0, 1, 2, 3, 0, 2], [1, 2, 1, 1, 2, 0]])  # node 1: 3 in, node 3: none
    edge_attr = np.arange(6 * EDGE_FEATURES, dtype=np.float32).reshape(6, EDGE_FEATURES) + 1
    d = dense_inputs(x, edge_index, edge_attr)
    assert d.slots == 3
    assert d.edge_index.shape == (2, 7) and d.edge_index[:, :6].tolist() == edge_index.tolist()
    assert d.edge_index[:, 6].tolist() == [0, 0] and not d.edge_attr[6].any()  # the padding edge
    np.testing.assert_array_equal(d.edge_attr[:6], edge_attr)
    assert d.edge_in.tolist() == [[5, 6, 6], [0, 2, 3], [1, 4, 6], [6, 6, 6]]  # input order, padded with E = 6
    assert list(d.feed()) == ["x", "edge_index", "edge_attr", "edge_in"]


def test_dense_inputs_refuse_bad_edges() -> None:
    x = np.zeros((3, NODE_FEATURES), dtype=np.float32)
    with pytest.raises(ValueError, match="edge_index"):
        dense_inputs(x, np.array([[0, 3], [1, 0]]), np.zeros((2, EDGE_FEATURES), dtype=np.float32))
    with pytest.raises(ValueError, match="edge_attr"):
        dense_inputs(x, np.array([[0], [1]]), np.zeros((2, EDGE_FEATURES), dtype=np.float32))


def test_dense_twin_matches_the_trained_model_on_mixed_batches() -> None:
    from gnn_model.training import load_checkpoint

    model, _ = load_checkpoint(CHECKPOINT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = DenseEdgeScorer(model)
    # Problems of 2..200 nodes in one batch, singletons, and every end kind / window mix.
    for seed, sizes in ((1, [2, 3, 200, 5, 17, 64, 120, 9, 2, 41]), (2, [200]), (3, [2]), (4, [33] * 12)):
        batch = _mixed_batch(seed, sizes)
        ref = _reference(model, batch.x, batch.edge_index, batch.edge_attr)
        out = twin.score(batch.x, batch.edge_index, batch.edge_attr)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4, f"sizes {sizes}: max |diff| {np.abs(out - ref).max():.2e}"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the source model was modified"


def test_dense_twin_matches_any_weights_and_sizes() -> None:
    # Untrained, seeded weights (larger activations than the trained model) and other layer counts/widths.
    for seed, config in (
        (0, ModelConfig()),
        (1, ModelConfig(hidden=8, layers=1)),
        (2, ModelConfig(hidden=16, layers=3)),
    ):
        torch.manual_seed(seed)
        model = EdgeScorer(config).eval()
        batch = _mixed_batch(seed, [2, 30, 7, 90])
        np.testing.assert_allclose(twin_out := DenseEdgeScorer(model).score(batch.x, batch.edge_index, batch.edge_attr),
                                   _reference(model, batch.x, batch.edge_index, batch.edge_attr), atol=1e-4, rtol=0)  # fmt: skip
        assert np.isfinite(twin_out).all()


def test_dense_twin_padding_never_reaches_real_edges() -> None:
    torch.manual_seed(0)
    model = EdgeScorer().eval()
    twin = DenseEdgeScorer(model)
    # Node 4 has no incoming edge, node 1 has three: most slots are padding.
    x = np.random.default_rng(0).random((5, NODE_FEATURES), dtype=np.float32)
    edge_index = np.array([[0, 2, 3, 1, 4, 1], [1, 1, 1, 2, 3, 0]])
    edge_attr = np.random.default_rng(1).random((6, EDGE_FEATURES), dtype=np.float32)
    d = dense_inputs(x, edge_index, edge_attr)
    base = twin(*(torch.from_numpy(a) for a in (d.x, d.edge_index, d.edge_attr, d.edge_in))).detach().numpy()[:-1]
    # Whatever the padding edge carries, real logits do not move.
    attr = d.edge_attr.copy()
    attr[-1] = 1e3
    index = d.edge_index.copy()
    index[:, -1] = [4, 2]
    moved = twin(*(torch.from_numpy(a) for a in (d.x, index, attr, d.edge_in))).detach().numpy()[:-1]
    np.testing.assert_array_equal(base, moved)
    np.testing.assert_allclose(base, _reference(model, x, edge_index, edge_attr), atol=1e-5)


def test_batch_chunks_keep_problems_whole_and_in_order() -> None:
    batch = _mixed_batch(5, [20, 3, 60, 2, 40, 40, 7])
    counts = np.diff(batch.edge_splits)
    torch.manual_seed(0)
    backend = TorchBackend(EdgeScorer().eval(), "test")
    whole = backend.predict(batch)
    for max_edges in (1, 300, 700, int(counts.sum()) - 1, int(counts.sum())):
        parts = batch.chunks(max_edges)
        sizes = [len(p.edge_splits) - 1 for p in parts]
        assert sum(sizes) == len(counts)
        for p in parts:
            n_edges = int(p.edge_splits[-1])
            assert n_edges <= max_edges or len(p.edge_splits) == 2  # only a lone problem may be bigger
            assert p.edge_index.min() >= 0 and p.edge_index.max() < p.x.shape[0]
        chunked = [out for p in parts for out in backend.predict(p)]
        for a, b in zip(whole, chunked, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(batch.chunks(int(counts.sum()))) == 1 and len(batch.chunks(1)) == len(counts)
