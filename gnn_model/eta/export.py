"""The travel-time GNN to ONNX, with its map's edge inputs baked in (input ``minutes`` [T],
output ``multipliers`` [T, E, 3]), and the parity check against torch."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from gnn_model.eta.features import EdgeInputs
from gnn_model.eta.model import EtaEnsemble, EtaExport, EtaGnn

OPSET = 17


def export_onnx(model: EtaGnn | EtaEnsemble, inputs: EdgeInputs) -> bytes:
    wrapper = EtaExport(model, inputs.x, inputs.edge_index, inputs.in_norm, inputs.out_norm).eval()
    with tempfile.TemporaryDirectory(prefix="eta-onnx-") as tmp, torch.no_grad():
        path = Path(tmp) / "eta.onnx"
        torch.onnx.export(
            wrapper, (torch.tensor([7.5], dtype=torch.float32),), str(path), input_names=["minutes"],
            output_names=["multipliers"], dynamic_axes={"minutes": {0: "moments"}, "multipliers": {0: "moments"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
        return path.read_bytes()


def torch_multipliers(model: EtaGnn | EtaEnsemble, inputs: EdgeInputs, minutes: np.ndarray) -> np.ndarray:
    wrapper = EtaExport(model, inputs.x, inputs.edge_index, inputs.in_norm, inputs.out_norm).eval()
    with torch.no_grad():
        return wrapper(torch.from_numpy(np.asarray(minutes, dtype=np.float32))).numpy()


def onnx_multipliers(onnx_model: bytes, minutes: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"minutes": np.asarray(minutes, dtype=np.float32)})[0])


def version_of(onnx_model: bytes) -> str:
    """Content version: the first 12 hex digits of the ONNX bytes' SHA-256."""
    return hashlib.sha256(onnx_model).hexdigest()[:12]
