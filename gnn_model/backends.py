"""One inference interface, several engines: ``Backend.predict(batch) -> edge scores``.

* ``torch``: eager PyTorch, the reference;
* ``onnxruntime``: ONNX Runtime CPU, fp32, all graph optimisations, threads configurable;
* ``onnxruntime-int8``: the same on the int8 model;
* ``tensorrt``: TensorRT on an NVIDIA GPU (optional extra ``[gpu]``), engines built from
  the ONNX file with one optimisation profile per node bucket, FP16 or INT8, cached by
  GPU compute capability and TensorRT version, warmed up before use.

A batch is several problems' candidate graphs joined as one disjoint graph; ``predict``
returns one score array per problem, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gnn_model.compile import FP32_FILE, INT8_FILE, NODE_BUCKETS, Manifest
from gnn_model.features import EDGE_FEATURES, NODE_FEATURES, GraphFeatures

log = logging.getLogger(__name__)
BACKEND_NAMES = ("torch", "onnxruntime", "onnxruntime-int8", "tensorrt")


class BackendUnavailable(RuntimeError):
    """This machine cannot run the backend; the message says what is missing."""


@dataclass(frozen=True)
class FeatureBatch:
    """Disjoint union of problems' graphs, and where each problem's edges are."""

    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    edge_splits: np.ndarray  # cumulative edge counts, len = problems + 1

    @classmethod
    def of(cls, graphs: Sequence[GraphFeatures]) -> FeatureBatch:
        if not graphs:
            raise ValueError("a batch needs at least one problem")
        node_off = np.cumsum([0] + [g.x.shape[0] for g in graphs[:-1]])
        edges = [g.edge_index + off for g, off in zip(graphs, node_off, strict=True)]
        splits = np.cumsum([0] + [g.edge_index.shape[1] for g in graphs])
        return cls(
            x=np.concatenate([g.x for g in graphs]).astype(np.float32, copy=False),
            edge_index=np.concatenate(edges, axis=1).astype(np.int64, copy=False),
            edge_attr=np.concatenate([g.edge_attr for g in graphs]).astype(np.float32, copy=False),
            edge_splits=splits,
        )

    def split(self, logits: np.ndarray) -> list[np.ndarray]:
        return [logits[a:b] for a, b in zip(self.edge_splits[:-1], self.edge_splits[1:], strict=True)]


class Backend(Protocol):
    name: str
    version: str

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]: ...


class TorchBackend:
    name = "torch"

    def __init__(self, model: object, version: str, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.version = version

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(  # type: ignore[operator]
                torch.from_numpy(batch.x), torch.from_numpy(batch.edge_index), torch.from_numpy(batch.edge_attr)
            )
        return batch.split(out.numpy())


class OnnxRuntimeBackend:
    def __init__(self, model_dir: Path, *, int8: bool = False, threads: int | None = None) -> None:
        import onnxruntime as ort

        manifest = Manifest.read(model_dir)
        path = model_dir / (INT8_FILE if int8 else FP32_FILE)
        if not path.is_file():
            raise BackendUnavailable(
                f"{path} missing: run `routing compile --backend {'onnxruntime-int8' if int8 else 'onnxruntime'}`"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread per session: ONNX Runtime's ScatterND with reduction="add" (our row-wise
        # message sums) races on repeated indices when split across threads (measured: up to
        # 0.1 of error). Parallelism comes from batching, more workers and the search pool.
        if threads and threads > 1:
            log.warning("onnxruntime backend runs single-threaded (asked for %d threads)", threads)
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-int8" if int8 else "onnxruntime"
        self.version = manifest.version + ("-int8" if int8 else "")

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        (out,) = self.session.run(None, {"x": batch.x, "edge_index": batch.edge_index, "edge_attr": batch.edge_attr})
        return batch.split(out)


def tensorrt_usable() -> str | None:
    """None when TensorRT and a CUDA GPU are present, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install '.[gpu]')"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
    except ImportError:
        return "torch is not installed"
    return None


class TensorRTBackend:
    """TensorRT engine from the ONNX model. Unverified until it has run on a GPU (see README)."""

    name = "tensorrt"

    def __init__(self, model_dir: Path, *, precision: str = "fp16", calibration: list[GraphFeatures] | None = None,
                 max_batch_problems: int = 128) -> None:  # fmt: skip
        why = tensorrt_usable()
        if why:
            raise BackendUnavailable(f"tensorrt: {why}")
        import tensorrt as trt
        import torch

        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError("precision must be fp32, fp16 or int8")
        manifest = Manifest.read(model_dir)
        self.version = f"{manifest.version}-trt-{precision}"
        major, minor = torch.cuda.get_device_capability()
        cache = model_dir / "trt" / f"sm{major}{minor}-trt{trt.__version__}-{precision}.engine"
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        if cache.is_file():
            engine_bytes = cache.read_bytes()
        else:
            engine_bytes = self._build(model_dir / FP32_FILE, precision, calibration, max_batch_problems)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(engine_bytes)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._profiles = self._profile_limits(max_batch_problems)
        self._warm_up()

    @staticmethod
    def _profile_limits(max_batch_problems: int) -> list[tuple[int, int]]:
        """(max nodes, max edges) per optimisation profile, smallest first."""
        return [(b * max_batch_problems, b * max_batch_problems * 20) for b in NODE_BUCKETS]

    def _build(self, onnx_path: Path, precision: str, calibration: list[GraphFeatures] | None,
               max_batch_problems: int) -> bytes:  # fmt: skip
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"tensorrt cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
            if calibration:
                config.int8_calibrator = _make_calibrator(trt, calibration)
        low_n, low_e = 1, 1
        for max_n, max_e in self._profile_limits(max_batch_problems):
            profile = builder.create_optimization_profile()
            opt_n, opt_e = max(low_n, max_n // 2), max(low_e, max_e // 2)
            profile.set_shape("x", (low_n, NODE_FEATURES), (opt_n, NODE_FEATURES), (max_n, NODE_FEATURES))
            profile.set_shape("edge_index", (2, low_e), (2, opt_e), (2, max_e))
            profile.set_shape("edge_attr", (low_e, EDGE_FEATURES), (opt_e, EDGE_FEATURES), (max_e, EDGE_FEATURES))
            config.add_optimization_profile(profile)
            low_n, low_e = max_n + 1, max_e + 1
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BackendUnavailable("tensorrt engine build failed")
        return bytes(engine)

    def _warm_up(self) -> None:
        rng = np.random.default_rng(0)
        n, e = 64, 640
        fake = FeatureBatch(rng.random((n, NODE_FEATURES), dtype=np.float32), rng.integers(0, n, (2, e)),
                            rng.random((e, EDGE_FEATURES), dtype=np.float32), np.array([0, e]))  # fmt: skip
        self.predict(fake)

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        import torch

        n, e = batch.x.shape[0], batch.edge_index.shape[1]
        profile = next((i for i, (mn, me) in enumerate(self._profiles) if n <= mn and e <= me), None)
        if profile is None:
            raise ValueError(f"batch of {n} nodes / {e} edges exceeds the largest TensorRT profile")
        x = torch.from_numpy(batch.x).cuda()
        ei = torch.from_numpy(batch.edge_index).cuda()
        ea = torch.from_numpy(batch.edge_attr).cuda()
        out = torch.empty(e, dtype=torch.float32, device="cuda")
        ctx = self.context
        ctx.set_optimization_profile_async(profile, self.stream.cuda_stream)
        for name, t in (("x", x), ("edge_index", ei), ("edge_attr", ea)):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        ctx.set_tensor_address("edge_logits", out.data_ptr())
        ctx.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return batch.split(out.cpu().numpy())


def _make_calibrator(trt, calibration: list[GraphFeatures]):  # type: ignore[no-untyped-def]
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(calibration)
            self.keep: list[torch.Tensor] = []

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # type: ignore[no-untyped-def]
            f = next(self.batches, None)
            if f is None:
                return None
            tensors = {"x": torch.from_numpy(f.x).cuda(), "edge_index": torch.from_numpy(f.edge_index).cuda(),
                       "edge_attr": torch.from_numpy(f.edge_attr).cuda()}  # fmt: skip
            self.keep = list(tensors.values())
            return [int(tensors[n].data_ptr()) for n in names]

        def read_calibration_cache(self):  # type: ignore[no-untyped-def]
            return None

        def write_calibration_cache(self, cache):  # type: ignore[no-untyped-def]
            return None

    return Calibrator()


def load_backend(name: str, model_dir: Path, checkpoint: Path, threads: int | None = None) -> Backend:
    """The named backend; ``auto`` = TensorRT when usable, else ONNX Runtime fp32."""
    if name not in (*BACKEND_NAMES, "auto"):
        raise ValueError(f"unknown backend {name!r}: expected one of auto, {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        if tensorrt_usable() is None:
            try:
                return TensorRTBackend(model_dir)
            except BackendUnavailable as exc:
                log.warning("tensorrt not usable (%s); using onnxruntime", exc)
        name = "onnxruntime"
    if name == "torch":
        from gnn_model.training import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        return TorchBackend(model, str(meta["version"]), threads)
    if name in ("onnxruntime", "onnxruntime-int8"):
        return OnnxRuntimeBackend(model_dir, int8=name.endswith("int8"), threads=threads)
    return TensorRTBackend(model_dir)
