"""From a Problem to the model's tensors: a sparse candidate graph with node and edge features.

Graph nodes are the start, the stops and (for a ``fixed`` end) the end node, in the
local order of ``search.localize``; an ``open`` route's virtual end and a ``return``
route's copy of the start are not graph nodes. Directed edges: for each node its k
nearest successors and its k nearest predecessors by travel time (both directions).

Node features (``NODE_FEATURES``): normalised position (when known), start and end
flags, window start and end relative to the horizon, a has-window flag, service time.
Edge features (``EDGE_FEATURES``): travel time both ways over the local scale, and the
rank of the edge among the source's successors and the target's predecessors.
Scale: the mean travel time to the 5 nearest other nodes; horizon: scale x nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from routing_core.problem import EndKind, Problem

NODE_FEATURES = 9
EDGE_FEATURES = 4
DEFAULT_K = 10
_CLIP = 3.0


@dataclass(frozen=True)
class GraphFeatures:
    """Arrays for one problem (numpy; the model takes them as tensors)."""

    x: np.ndarray  # float32 [N, NODE_FEATURES]
    edge_index: np.ndarray  # int64 [2, E] (source, target), graph node indices
    edge_attr: np.ndarray  # float32 [E, EDGE_FEATURES]
    n_local: int  # size of the search's local layout (graph nodes + virtual end)
    closes_to_start: bool  # a return route: local end L-1 is the start (graph node 0)


def graph_matrix(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """(problem node of each graph node, travel-time matrix between graph nodes)."""
    nodes = [problem.start, *problem.stops.tolist()]
    if problem.end is EndKind.FIXED and problem.end_node is not None:
        nodes.append(problem.end_node)
    idx = np.asarray(nodes, dtype=np.int64)
    return idx, problem.matrix[np.ix_(idx, idx)]


def build_features(problem: Problem, k: int = DEFAULT_K) -> GraphFeatures:
    idx, m = graph_matrix(problem)
    n = idx.size
    finite = np.where(np.isfinite(m), m, np.nan)
    off = finite + np.diag(np.full(n, np.nan))
    kk = max(1, min(k, n - 1))
    near = np.sort(np.nan_to_num(off, nan=np.inf), axis=1)[:, : min(5, max(1, n - 1))]
    near = near[np.isfinite(near)]
    scale = float(near.mean()) if near.size and near.mean() > 0 else 1.0
    horizon = scale * n

    x = np.zeros((n, NODE_FEATURES), dtype=np.float32)
    if problem.coords is not None:
        c = problem.coords[idx]
        lo = c.min(axis=0)
        span = float((c.max(axis=0) - lo).max()) or 1.0
        x[:, 0:2] = (c - lo) / span
        x[:, 2] = 1.0
    x[0, 3] = 1.0
    fixed_end = problem.end is EndKind.FIXED
    if fixed_end:
        x[n - 1, 4] = 1.0
    early = problem.earliest[idx]
    late = problem.latest[idx]
    has_w = (early > 0) | np.isfinite(late)
    x[:, 5] = np.clip(early / horizon, 0, _CLIP)
    x[:, 6] = np.where(np.isfinite(late), np.clip(late / horizon, 0, _CLIP), _CLIP)
    x[:, 7] = has_w
    x[:, 8] = np.clip(problem.service_s[idx] / scale, 0, _CLIP)
    x[0, 5:9] = 0.0

    big = np.where(np.isfinite(m), m, np.inf)
    np.fill_diagonal(big, np.inf)
    out_rank = np.argsort(big, axis=1, kind="stable")[:, :kk]  # successors of i
    in_rank = np.argsort(big, axis=0, kind="stable")[:kk, :].T  # predecessors of j
    # Candidate edges: each node's kk nearest successors (in rank order), then the pairs that are
    # only among some node's kk nearest predecessors; per pair its rank both ways (kk: not ranked).
    ar = np.arange(n)
    rank_out = np.full((n, n), kk, dtype=np.int64)
    rank_out[ar[:, None], out_rank] = np.arange(out_rank.shape[1])[None, :]
    rank_in = np.full((n, n), kk, dtype=np.int64)
    rank_in[in_rank, ar[:, None]] = np.arange(in_rank.shape[1])[None, :]
    in_src, in_dst = in_rank.ravel(), np.repeat(ar, in_rank.shape[1])
    only_in = rank_out[in_src, in_dst] == kk
    src = np.concatenate((np.repeat(ar, out_rank.shape[1]), in_src[only_in]))
    dst = np.concatenate((out_rank.ravel(), in_dst[only_in]))
    finite_pair = np.isfinite(big[src, dst])
    src, dst = src[finite_pair], dst[finite_pair]
    if src.size == 0:
        src, dst = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    ranks = np.column_stack((rank_out[src, dst], rank_in[src, dst])).astype(np.float32)
    fwd = np.clip(np.nan_to_num(m[src, dst] / scale, posinf=_CLIP), 0, _CLIP)
    bwd = np.clip(np.nan_to_num(m[dst, src] / scale, posinf=_CLIP), 0, _CLIP)
    edge_attr = np.column_stack((fwd, bwd, ranks[:, 0] / kk, ranks[:, 1] / kk)).astype(np.float32)
    return GraphFeatures(
        x=x, edge_index=np.vstack((src, dst)), edge_attr=edge_attr,
        n_local=len(problem.stops) + 2, closes_to_start=problem.end is EndKind.RETURN,
    )  # fmt: skip


def edge_labels(features: GraphFeatures, problem: Problem, order: tuple[int, ...] | list[int]) -> np.ndarray:
    """1.0 for candidate edges the route ``order`` drives, else 0.0."""
    idx, _ = graph_matrix(problem)
    pos = {int(node): g for g, node in enumerate(idx.tolist())}
    seq = [0] + [pos[int(s)] for s in order]
    if problem.end is EndKind.RETURN:
        seq.append(0)
    elif problem.end is EndKind.FIXED:
        seq.append(idx.size - 1)
    used = set(pairwise(seq))
    src, dst = features.edge_index
    return np.asarray([(int(a), int(b)) in used for a, b in zip(src, dst, strict=True)], dtype=np.float32)


def local_scores(features: GraphFeatures, edge_scores: np.ndarray) -> np.ndarray:
    """Edge scores (higher = more likely in the route) as the search's local L x L matrix.

    Pairs outside the candidate graph get -1e9 (finite, for the compiled search).
    """
    L = features.n_local
    out = np.full((L, L), -1.0e9)
    src, dst = features.edge_index
    out[src, dst] = edge_scores
    if features.closes_to_start:
        # The local end (L-1) is the start again: edges into the start are edges into the end.
        into_start = dst == 0
        out[src[into_start], L - 1] = edge_scores[into_start]
        out[:, 0] = -1.0e9
    return out
