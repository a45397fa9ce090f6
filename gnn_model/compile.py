"""Compile the edge scorer: ONNX export (fp32), int8 quantisation, and the model manifest.

A model directory holds ``model.onnx`` (fp32), optionally ``model.int8.onnx``, TensorRT
engines under ``trt/`` (built on the GPU machine), and ``manifest.json``: the version
(content checksum of the fp32 ONNX), input and output names and shapes, the node
buckets (which become TensorRT optimisation profiles), precisions and the training
metadata of the checkpoint it came from.

What is exported is the checkpoint's dense twin (``gnn_model.dense``): the same weights
and logits, with node-side projections and gather + sum message passing instead of
per-edge projections and scatter. Its inputs are ``gnn_model.dense_layout``'s: a batch
is a disjoint union of problems plus one padding edge, and each node's incoming edges in
``[N, K]`` slots; the node count N, edge count E + 1 and slot count K are dynamic, and
on GPUs the buckets bound them per optimisation profile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnn_model.dense_layout import DENSE_INPUT_NAMES, dense_inputs
from gnn_model.features import EDGE_FEATURES, NODE_FEATURES, GraphFeatures

OPSET = 17
INPUT_NAMES = DENSE_INPUT_NAMES
OUTPUT_NAMES = ("edge_logits",)
# Problem sizes (nodes per problem) the GPU profiles are built for; edges ~ 2k per node.
NODE_BUCKETS = (16, 32, 64, 128, 256)
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MANIFEST = "manifest.json"
# Bumped whenever the export itself changes, so stale compiled models are rebuilt.
# 3: the dense twin (node-side projections, gather + sum messages, no scatter).
EXPORT_REVISION = 3


@dataclass(frozen=True)
class Manifest:
    version: str
    inputs: dict[str, list[object]]
    outputs: dict[str, list[object]]
    buckets: tuple[int, ...]
    precisions: tuple[str, ...]
    opset: int
    checkpoint_version: str
    training: dict[str, object]
    export_revision: int = 0

    def write(self, directory: Path) -> None:
        data = {**self.__dict__, "buckets": list(self.buckets), "precisions": list(self.precisions)}
        (directory / MANIFEST).write_text(json.dumps(data, indent=2, default=str) + "\n")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {directory}: run `routing compile` first")
        data = json.loads(path.read_text())
        data["buckets"] = tuple(data["buckets"])
        data["precisions"] = tuple(data["precisions"])
        return cls(**data)


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def sample_inputs(features: GraphFeatures):  # type: ignore[no-untyped-def]
    """The dense twin's example inputs (torch tensors, in ``INPUT_NAMES`` order) for one graph."""
    import torch

    d = dense_inputs(features.x, features.edge_index, features.edge_attr)
    return tuple(torch.from_numpy(a) for a in (d.x, d.edge_index, d.edge_attr, d.edge_in))


def export_onnx(model: Any, example: GraphFeatures, path: Path) -> None:
    """Export ``model``'s dense twin with named inputs/outputs and dynamic node, edge and slot dimensions.

    The file passes ``onnx.checker`` (full check) and has no Scatter op.
    """
    import onnx
    import torch

    from gnn_model.dense import DenseEdgeScorer

    twin = model if isinstance(model, DenseEdgeScorer) else DenseEdgeScorer(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            twin, sample_inputs(example), str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={"x": {0: "nodes"}, "edge_index": {1: "edges"}, "edge_attr": {0: "edges"},
                          "edge_in": {0: "nodes", 1: "slots"}, "edge_logits": {0: "edges"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    scatters = sorted({n.op_type for n in graph.graph.node if n.op_type.startswith("Scatter")})
    if scatters:
        raise RuntimeError(f"exported graph still has {scatters}: the dense twin should have none")


def quantize_int8(fp32: Path, out: Path, calibration: list[GraphFeatures] | None, mode: str = "dynamic") -> None:
    """int8 weights (dynamic: activations quantised on the fly) or static QDQ calibrated on real problems."""
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    if mode == "dynamic":
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        return
    if not calibration:
        raise ValueError("static int8 needs calibration problems")
    problems = calibration

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """Feeds the calibration problems to the static quantiser, one at a time."""

        def __init__(self) -> None:
            self.batches = iter(problems)

        def get_next(self) -> dict[str, np.ndarray] | None:
            f = next(self.batches, None)
            return None if f is None else dense_inputs(f.x, f.edge_index, f.edge_attr).feed()

    quantize_static(str(fp32), str(out), Reader(), op_types_to_quantize=["MatMul", "Gemm"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip


def compile_model(checkpoint: Path, out_dir: Path, example: GraphFeatures, *, int8: bool = True,
                  int8_mode: str = "dynamic", calibration: list[GraphFeatures] | None = None) -> Manifest:  # fmt: skip
    """Export a checkpoint to ``out_dir`` (fp32, and int8 when asked) and write the manifest."""
    from gnn_model.training import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / FP32_FILE
    export_onnx(model, example, fp32)
    precisions = ["fp32"]
    if int8:
        quantize_int8(fp32, out_dir / INT8_FILE, calibration, int8_mode)
        precisions.append(f"int8-{int8_mode}")
    manifest = Manifest(
        version=_checksum(fp32),
        inputs={"x": ["nodes", NODE_FEATURES, "float32"], "edge_index": [2, "edges", "int64"],
                "edge_attr": ["edges", EDGE_FEATURES, "float32"], "edge_in": ["nodes", "slots", "int64"]},
        outputs={"edge_logits": ["edges", "float32"]},
        buckets=NODE_BUCKETS, precisions=tuple(precisions), opset=OPSET,
        checkpoint_version=str(meta.get("version", "")),
        training={k: meta[k] for k in ("seed", "final_metrics", "maps", "timings_s", "parameters") if k in meta},
        export_revision=EXPORT_REVISION,
    )  # fmt: skip
    manifest.write(out_dir)
    return manifest
