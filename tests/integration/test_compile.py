"""Compiling the model: dense-twin ONNX export + checker, ONNX Runtime parity with torch (mixed sizes, 1 and
2 threads), int8 quality (dynamic and static), stale model directories, TensorRT gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_model.backends import (
    CHUNK_EDGES,
    BackendUnavailable,
    FeatureBatch,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    load_backend,
    tensorrt_usable,
)
from gnn_model.compile import EXPORT_REVISION, FP32_FILE, INT8_FILE, MANIFEST, Manifest, compile_model
from gnn_model.features import build_features, local_scores
from gnn_model.model import EdgeScorer
from gnn_model.search import SearchParams, solve, warm_up
from gnn_model.training import euclidean_problem, load_checkpoint, save_checkpoint, vary

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "gnn_model" / "artifacts" / "edge_scorer.pt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed trained model when present, else a seeded untrained one (same architecture)."""
    if COMMITTED.is_file():
        return COMMITTED
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, EdgeScorer().eval(), {"seed": 0})
    return path


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(11)
    return [build_features(vary(euclidean_problem(int(rng.integers(15, 80)), rng), rng)) for _ in range(24)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, features) -> Path:
    out = tmp_path_factory.mktemp("model")
    compile_model(checkpoint, out, features[0], int8=True, calibration=features[:8])
    return out


def test_export_passes_checker_and_writes_manifest(model_dir: Path, checkpoint: Path) -> None:
    import onnx

    graph = onnx.load(str(model_dir / FP32_FILE))
    onnx.checker.check_model(graph, full_check=True)
    ops = {node.op_type for node in graph.graph.node}
    assert not {op for op in ops if op.startswith("Scatter")}, "the dense twin sums messages without scatter"
    assert {"Gather", "ReduceSum", "LayerNormalization"} <= ops
    assert [i.name for i in graph.graph.input] == ["x", "edge_index", "edge_attr", "edge_in"]
    m = Manifest.read(model_dir)
    assert list(m.inputs) == ["x", "edge_index", "edge_attr", "edge_in"] and set(m.outputs) == {"edge_logits"}
    assert m.export_revision == EXPORT_REVISION
    assert m.precisions[0] == "fp32" and m.precisions[1].startswith("int8")
    assert m.checkpoint_version == load_checkpoint(checkpoint)[1]["version"]
    assert (model_dir / INT8_FILE).is_file()
    assert len(m.version) == 16


@pytest.mark.parametrize(("threads", "chunk_edges"), [(1, CHUNK_EDGES), (2, CHUNK_EDGES), (1, 500)])
def test_onnxruntime_matches_torch(model_dir: Path, checkpoint: Path, features, threads: int, chunk_edges: int) -> None:
    model, meta = load_checkpoint(checkpoint)
    ref = TorchBackend(model, str(meta["version"]))
    ort = OnnxRuntimeBackend(model_dir, threads=threads, chunk_edges=chunk_edges)
    assert ort.threads == threads
    rng = np.random.default_rng(3)
    mixed = [build_features(vary(euclidean_problem(n, rng, asymmetry=0.2), rng)) for n in (2, 200, 3, 120, 9, 2, 57)]
    # dynamic shapes: every batch size, problem size and slot count through the same file
    for chunk in (features[:1], features[:7], features, mixed, mixed[:1], mixed[1:2]):
        batch = FeatureBatch.of(chunk)
        out = ort.predict(batch)
        assert [len(o) for o in out] == [g.edge_index.shape[1] for g in chunk]
        for a, b in zip(ref.predict(batch), out, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def static_int8_dir(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, features) -> Path:
    out = tmp_path_factory.mktemp("model-static")
    compile_model(checkpoint, out, features[0], int8=True, int8_mode="static", calibration=features[:8])
    return out


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_routes_are_as_good_as_fp32(mode: str, model_dir: Path, static_int8_dir: Path) -> None:
    warm_up()
    directory = model_dir if mode == "dynamic" else static_int8_dir
    assert Manifest.read(directory).precisions[1] == f"int8-{mode}"
    fp32 = OnnxRuntimeBackend(directory)
    int8 = OnnxRuntimeBackend(directory, int8=True)
    rng = np.random.default_rng(5)
    params = SearchParams(time_limit_ms=1e7, max_iterations=200, seed=1)
    costs = {"fp32": [], "int8": []}
    for _ in range(16):
        p = euclidean_problem(40, rng)
        f = build_features(p)
        for name, backend in (("fp32", fp32), ("int8", int8)):
            scores = backend.predict(FeatureBatch.of([f]))[0]
            res = solve(p, params, scores=local_scores(f, scores))
            assert res.evaluation.valid
            costs[name].append(res.evaluation.travel_s)
    delta = np.mean(costs["int8"]) / np.mean(costs["fp32"]) - 1.0
    assert abs(delta) < 0.01, f"int8 mean route cost differs from fp32 by {delta:.2%}"


def test_stale_model_directory_is_refused(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    stale = tmp_path / "stale"
    shutil.copytree(model_dir, stale)
    m = Manifest.read(stale)
    Manifest(**{**m.__dict__, "export_revision": EXPORT_REVISION - 1}).write(stale)
    assert (stale / MANIFEST).is_file()
    with pytest.raises(BackendUnavailable, match="export revision"):
        OnnxRuntimeBackend(stale)


def test_load_backend_names(model_dir: Path, checkpoint: Path) -> None:
    assert load_backend("torch", model_dir, checkpoint).name == "torch"
    assert load_backend("onnxruntime-int8", model_dir, checkpoint).name == "onnxruntime-int8"
    auto = load_backend("auto", model_dir, checkpoint)
    assert auto.name == ("tensorrt" if tensorrt_usable() is None else "onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("tpu", model_dir, checkpoint)


@pytest.mark.skipif(tensorrt_usable() is not None, reason=f"TensorRT not runnable here: {tensorrt_usable()}")
def test_tensorrt_matches_onnxruntime(model_dir: Path, features) -> None:  # pragma: no cover - GPU only
    trt = TensorRTBackend(model_dir, precision="fp32")
    ort = OnnxRuntimeBackend(model_dir)
    batch = FeatureBatch.of(features)
    for a, b in zip(ort.predict(batch), trt.predict(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_tensorrt_refuses_clearly_without_gpu(model_dir: Path) -> None:
    if tensorrt_usable() is None:
        pytest.skip("TensorRT is usable here")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        TensorRTBackend(model_dir)
