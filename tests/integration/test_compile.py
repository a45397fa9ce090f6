"""Compiling the model: ONNX export + checker, ONNX Runtime parity with torch, int8 quality, TensorRT gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_model.backends import (
    BackendUnavailable,
    FeatureBatch,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    load_backend,
    tensorrt_usable,
)
from gnn_model.compile import FP32_FILE, INT8_FILE, Manifest, compile_model
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
    assert "ScatterND" in ops and "ScatterElements" not in ops  # the row-wise sums were rewritten
    m = Manifest.read(model_dir)
    assert set(m.inputs) == {"x", "edge_index", "edge_attr"} and set(m.outputs) == {"edge_logits"}
    assert m.precisions[0] == "fp32" and m.precisions[1].startswith("int8")
    assert m.checkpoint_version == load_checkpoint(checkpoint)[1]["version"]
    assert (model_dir / INT8_FILE).is_file()
    assert len(m.version) == 16


def test_onnxruntime_matches_torch(model_dir: Path, checkpoint: Path, features) -> None:
    model, meta = load_checkpoint(checkpoint)
    ref = TorchBackend(model, str(meta["version"]))
    ort = OnnxRuntimeBackend(model_dir)
    # dynamic shapes: every batch size and problem size through the same file
    for chunk in (features[:1], features[:7], features):
        batch = FeatureBatch.of(chunk)
        for a, b in zip(ref.predict(batch), ort.predict(batch), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_int8_routes_are_as_good_as_fp32(model_dir: Path) -> None:
    warm_up()
    fp32 = OnnxRuntimeBackend(model_dir)
    int8 = OnnxRuntimeBackend(model_dir, int8=True)
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
