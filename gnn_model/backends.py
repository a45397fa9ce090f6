"""One inference interface, several engines: ``Backend.predict(batch) -> edge scores``.

* ``torch``: eager PyTorch, the reference;
* ``onnxruntime``: ONNX Runtime CPU, fp32, all graph optimisations, threads configurable;
* ``onnxruntime-int8``: the same on the int8 model;
* ``tensorrt``: TensorRT on an NVIDIA GPU (optional extra ``[gpu]``), engines built from
  the ONNX file with one optimisation profile per node bucket, FP16 or INT8, cached by
  GPU compute capability and TensorRT version, warmed up before use.

A batch is several problems' candidate graphs joined as one disjoint graph; ``predict``
returns one score array per problem, in order. The compiled backends run the model's
dense twin (``gnn_model.dense``) and build its inputs from the batch on every call
(``FeatureBatch.dense``), so their timings include that step; ONNX Runtime runs big
batches as cache-sized sub-batches (``CHUNK_EDGES``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gnn_model.compile import EXPORT_REVISION, FP32_FILE, INT8_FILE, NODE_BUCKETS, Manifest
from gnn_model.dense_layout import DenseInputs, dense_inputs
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
    node_splits: np.ndarray | None = None  # cumulative node counts; None: the batch cannot be split

    @classmethod
    def of(cls, graphs: Sequence[GraphFeatures]) -> FeatureBatch:
        if not graphs:
            raise ValueError("a batch needs at least one problem")
        node_splits = np.cumsum([0] + [g.x.shape[0] for g in graphs])
        edges = [g.edge_index + off for g, off in zip(graphs, node_splits[:-1], strict=True)]
        splits = np.cumsum([0] + [g.edge_index.shape[1] for g in graphs])
        return cls(
            x=np.concatenate([g.x for g in graphs]).astype(np.float32, copy=False),
            edge_index=np.concatenate(edges, axis=1).astype(np.int64, copy=False),
            edge_attr=np.concatenate([g.edge_attr for g in graphs]).astype(np.float32, copy=False),
            edge_splits=splits, node_splits=node_splits,
        )  # fmt: skip

    def chunks(self, max_edges: int) -> list[FeatureBatch]:
        """Consecutive problems grouped into sub-batches of at most ``max_edges`` edges (a bigger problem alone).

        Their per-problem results, in order, are this batch's.
        """
        es, ns = self.edge_splits, self.node_splits
        if ns is None or int(es[-1]) <= max_edges:
            return [self]
        parts: list[FeatureBatch] = []
        first = 0
        for last in range(1, len(es)):
            closes = last == len(es) - 1 or int(es[last + 1] - es[first]) > max_edges
            if closes:
                e0, e1, n0 = int(es[first]), int(es[last]), int(ns[first])
                parts.append(FeatureBatch(
                    x=self.x[n0 : int(ns[last])], edge_index=self.edge_index[:, e0:e1] - n0,
                    edge_attr=self.edge_attr[e0:e1], edge_splits=es[first : last + 1] - e0,
                    node_splits=ns[first : last + 1] - n0,
                ))  # fmt: skip
                first = last
        return parts

    def dense(self) -> DenseInputs:
        """The compiled model's inputs: these edges plus a padding edge, and incoming-edge slots per node."""
        return dense_inputs(self.x, self.edge_index, self.edge_attr)

    def split(self, logits: np.ndarray) -> list[np.ndarray]:
        """Per-problem logits; anything past the batch's edges (the dense twin's padding edge) is dropped."""
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


# ONNX Runtime runs a batch in sub-batches of about this many edges: each layer's [E, 48] tensors
# then stay in the core's cache (2 MB L2 here) instead of streaming through memory. Measured on
# this machine: batch 32 of 100-node problems 1.5x faster than one call, batch 1 unchanged.
CHUNK_EDGES = 2048


class OnnxRuntimeBackend:
    """ONNX Runtime CPU session on the exported dense twin (fp32 or int8)."""

    def __init__(self, model_dir: Path, *, int8: bool = False, threads: int | None = None,
                 chunk_edges: int = CHUNK_EDGES) -> None:  # fmt: skip
        import onnxruntime as ort

        manifest = Manifest.read(model_dir)
        path = model_dir / (INT8_FILE if int8 else FP32_FILE)
        if not path.is_file():
            raise BackendUnavailable(
                f"{path} missing: run `routing compile --backend {'onnxruntime-int8' if int8 else 'onnxruntime'}`"
            )
        if manifest.export_revision != EXPORT_REVISION:
            raise BackendUnavailable(f"{model_dir} is from another export revision: run `routing compile` again")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The dense export has no scatter, so the result does not depend on the thread count.
        # None or 0: ONNX Runtime's default (one per physical core); serving passes
        # ROUTING_MODEL_THREADS (default 1: the worker's search threads share the cores).
        opts.intra_op_num_threads = max(0, threads or 0)
        opts.inter_op_num_threads = 1
        if opts.intra_op_num_threads != 1:
            # Idle pool threads would otherwise spin after each call, on cores the search needs.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = opts.intra_op_num_threads
        if chunk_edges < 1:
            raise ValueError("chunk_edges must be >= 1")
        self.chunk_edges = chunk_edges
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-int8" if int8 else "onnxruntime"
        self.version = manifest.version + ("-int8" if int8 else "")

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for part in batch.chunks(self.chunk_edges):
            (logits,) = self.session.run(None, part.dense().feed())
            out.extend(part.split(logits))
        return out


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


# TensorRT optimisation profiles: per node bucket b, batches of up to ``max_batch_problems``
# problems of up to b nodes, up to EDGES_PER_NODE candidate edges per node on average
# (k = 10 nearest both ways gives about 12) and up to MAX_SLOTS incoming edges at one node.
EDGES_PER_NODE = 16
MAX_SLOTS = 32


class TensorRTBackend:
    """TensorRT engine from the exported dense twin. Unverified until it has run on a GPU (see README).

    fp32/fp16 engines are built from ``model.onnx``; int8 from the static (QDQ) int8 file
    ``routing compile --backend tensorrt --int8`` writes (explicit quantisation: the
    scales come from the calibration problems, no TensorRT calibrator). Engines are cached
    under ``trt/`` by model version, GPU compute capability, TensorRT version and precision.
    """

    name = "tensorrt"

    def __init__(self, model_dir: Path, *, precision: str = "fp16", max_batch_problems: int = 128) -> None:
        why = tensorrt_usable()
        if why:
            raise BackendUnavailable(f"tensorrt: {why}")
        import tensorrt as trt
        import torch

        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError("precision must be fp32, fp16 or int8")
        manifest = Manifest.read(model_dir)
        if manifest.export_revision != EXPORT_REVISION:
            raise BackendUnavailable(f"tensorrt: {model_dir} is from another export revision: run `routing compile`")
        onnx_path = model_dir / FP32_FILE
        if precision == "int8":
            if "int8-static" not in manifest.precisions:
                raise BackendUnavailable("tensorrt int8 needs the static int8 model: `routing compile --backend "
                                         "tensorrt --int8`")  # fmt: skip
            onnx_path = model_dir / INT8_FILE
        self.version = f"{manifest.version}-trt-{precision}"
        major, minor = torch.cuda.get_device_capability()
        cache = model_dir / "trt" / f"{manifest.version}-sm{major}{minor}-trt{trt.__version__}-{precision}.engine"
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._profiles = self._profile_limits(max_batch_problems)
        if cache.is_file():
            engine_bytes = cache.read_bytes()
        else:
            engine_bytes = self._build(onnx_path, precision)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(engine_bytes)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailable(f"tensorrt cannot load the cached engine {cache} (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._warm_up()

    @staticmethod
    def _profile_limits(max_batch_problems: int) -> list[tuple[int, int, int]]:
        """(max nodes, max edges incl. the padding edge, max slots) per optimisation profile, smallest first."""
        return [(b * max_batch_problems, b * max_batch_problems * EDGES_PER_NODE + 1, MAX_SLOTS) for b in NODE_BUCKETS]

    def _build(self, onnx_path: Path, precision: str) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"tensorrt cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ nodes in the file carry the scales
        for max_n, max_e, max_k in self._profiles:
            profile = builder.create_optimization_profile()
            opt_n, opt_e, opt_k = max(1, max_n // 2), max(2, max_e // 2), 20
            profile.set_shape("x", (1, NODE_FEATURES), (opt_n, NODE_FEATURES), (max_n, NODE_FEATURES))
            profile.set_shape("edge_index", (2, 1), (2, opt_e), (2, max_e))
            profile.set_shape("edge_attr", (1, EDGE_FEATURES), (opt_e, EDGE_FEATURES), (max_e, EDGE_FEATURES))
            profile.set_shape("edge_in", (1, 1), (opt_n, opt_k), (max_n, max_k))
            config.add_optimization_profile(profile)
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

        d = batch.dense()
        n, e, k = d.x.shape[0], d.edge_index.shape[1], d.slots
        profile = next((i for i, (mn, me, mk) in enumerate(self._profiles) if n <= mn and e <= me and k <= mk), None)
        if profile is None:
            raise ValueError(f"batch of {n} nodes / {e} edges / {k} slots exceeds the largest TensorRT profile")
        ctx = self.context
        with torch.cuda.stream(self.stream):
            inputs = {name: torch.from_numpy(a).cuda(non_blocking=False) for name, a in d.feed().items()}
            out = torch.empty(e, dtype=torch.float32, device="cuda")
            ctx.set_optimization_profile_async(profile, self.stream.cuda_stream)
            for name, t in inputs.items():
                ctx.set_input_shape(name, tuple(t.shape))
                ctx.set_tensor_address(name, t.data_ptr())
            ctx.set_tensor_address("edge_logits", out.data_ptr())
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("tensorrt execution failed")
            logits = out.cpu().numpy()
        return batch.split(logits)


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
