"""The model a process serves: compiled on first use, warmed before ready, hot-swappable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gnn_model.backends import Backend, BackendUnavailable, FeatureBatch, load_backend
from gnn_model.compile import EXPORT_REVISION, Manifest, compile_model
from gnn_model.search import warm_up
from routing_api.model_training import CHECKPOINT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    backend: Backend | None  # None: no model, the plain search serves
    name: str
    version: str


def calibration_features(count: int = 32):  # type: ignore[no-untyped-def]
    """Features of training-like problems (seeded): export example, int8 calibration, warm-up."""
    import numpy as np

    from gnn_model.features import build_features
    from gnn_model.training import euclidean_problem, vary

    rng = np.random.default_rng(1234)
    return [build_features(vary(euclidean_problem(int(rng.integers(20, 101)), rng), rng)) for _ in range(count)]


def ensure_compiled(checkpoint: Path, model_dir: Path) -> Manifest:
    """The manifest of ``model_dir``, exporting the checkpoint there first when missing or stale."""
    from gnn_model.training import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    try:
        manifest = Manifest.read(model_dir)
        if (manifest.checkpoint_version == meta["version"] and len(manifest.precisions) > 1
                and manifest.export_revision == EXPORT_REVISION):  # fmt: skip
            return manifest
    except FileNotFoundError:
        pass
    log.info("compiling model %s into %s", meta["version"], model_dir)
    calibration = calibration_features()
    return compile_model(checkpoint, model_dir, calibration[0], int8=True, calibration=calibration)


def load_model(backend_name: str, model_dir: Path, checkpoint: Path | None = None, threads: int = 1) -> LoadedModel:
    """Load and warm the backend; without a checkpoint the plain search serves (logged)."""
    warm_up()
    checkpoint = checkpoint or CHECKPOINT
    if backend_name == "none":
        return LoadedModel(None, "none", "none")
    if not checkpoint.is_file():
        log.warning("no model checkpoint at %s: serving the plain search", checkpoint)
        return LoadedModel(None, "none", "none")
    if backend_name != "torch":
        ensure_compiled(checkpoint, model_dir)
    try:
        backend = load_backend(backend_name, model_dir, checkpoint, threads=threads)
    except BackendUnavailable as exc:
        log.warning("backend %s unavailable (%s): falling back to onnxruntime", backend_name, exc)
        backend = load_backend("onnxruntime", model_dir, checkpoint, threads=threads)
    # Warm-up: the first call pays for allocations and kernel selection, not a driver.
    calib = calibration_features(8)
    backend.predict(FeatureBatch.of(calib[:8]))
    log.info("model backend %s, version %s, warmed up", backend.name, backend.version)
    return LoadedModel(backend, backend.name, backend.version)
