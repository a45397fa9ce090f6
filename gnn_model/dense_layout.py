"""Inputs of the edge scorer's dense twin (``gnn_model.dense``): the edges plus per-node incoming-edge slots.

numpy only, so the ONNX Runtime and TensorRT serving paths build their inputs without torch.

From a graph (or a disjoint union of graphs) with N nodes and E edges:

* ``x`` float32 [N, F]: node features, unchanged;
* ``edge_index`` int64 [2, E + 1]: the edges, then one padding edge (0 -> 0);
* ``edge_attr`` float32 [E + 1, F_e]: their features, then a zero row for the padding edge;
* ``edge_in`` int64 [N, K]: the ids of each node's incoming edges (K = the largest
  in-degree, at least 1), padded with E, the padding edge's id.

The model masks the padding edge out of every message sum, so the logits of edges
0..E-1 are ``EdgeScorer``'s and the last one (the padding edge's) is to be ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DENSE_INPUT_NAMES = ("x", "edge_index", "edge_attr", "edge_in")


@dataclass(frozen=True)
class DenseInputs:
    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    edge_in: np.ndarray

    @property
    def slots(self) -> int:
        """K: incoming-edge slots per node (the batch's largest in-degree)."""
        return int(self.edge_in.shape[1])

    def feed(self) -> dict[str, np.ndarray]:
        """Name -> array, as the exported model's inputs."""
        return {"x": self.x, "edge_index": self.edge_index, "edge_attr": self.edge_attr, "edge_in": self.edge_in}


def dense_inputs(x: np.ndarray, edge_index: np.ndarray, edge_attr: np.ndarray) -> DenseInputs:
    """The dense twin's inputs for nodes ``x`` [N, F] and edges ``edge_index`` [2, E] with ``edge_attr`` [E, F_e]."""
    n_nodes = int(x.shape[0])
    src = np.asarray(edge_index[0], dtype=np.int64)
    dst = np.asarray(edge_index[1], dtype=np.int64)
    n_edges = int(src.size)
    if edge_attr.shape[0] != n_edges:
        raise ValueError(f"edge_attr has {edge_attr.shape[0]} rows for {n_edges} edges")
    if n_edges and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_nodes):
        raise ValueError(f"edge_index refers to nodes outside 0..{n_nodes - 1}")
    counts = np.bincount(dst, minlength=n_nodes)
    k = max(1, int(counts.max()) if n_edges else 1)
    # Rank of each edge among its target's incoming edges (input order), without a Python loop. A stable
    # sort of 16-bit keys is numpy's radix sort: 5-8x faster than sorting the int64 ids of a large batch.
    keys = dst.astype(np.uint16) if n_nodes <= 1 << 16 else dst
    order = np.argsort(keys, kind="stable")
    first = np.cumsum(counts) - counts
    rank = np.empty(n_edges, dtype=np.int64)
    rank[order] = np.arange(n_edges, dtype=np.int64) - first[dst[order]]
    edge_in = np.full(n_nodes * k, n_edges, dtype=np.int64)
    edge_in[dst * k + rank] = np.arange(n_edges, dtype=np.int64)
    index = np.empty((2, n_edges + 1), dtype=np.int64)
    index[0, :n_edges] = src
    index[1, :n_edges] = dst
    index[:, n_edges] = 0
    attr = np.zeros((n_edges + 1, edge_attr.shape[1]), dtype=np.float32)
    attr[:n_edges] = edge_attr
    return DenseInputs(x=np.ascontiguousarray(x, dtype=np.float32), edge_index=index, edge_attr=attr,
                       edge_in=edge_in.reshape(n_nodes, k))  # fmt: skip
