"""The edge scorer's dense twin: the same weights and function, in the form that is exported and served.

``EdgeScorer`` (``gnn_model.model``) stays the source of truth: training runs it on a
disjoint union of graphs with per-edge projections and ``scatter_add`` message sums.
Exported as is, each layer multiplies four E x 48 x 48 products and sums messages with
ScatterND, which ONNX Runtime only gets right single-threaded. ``DenseEdgeScorer``
computes the same logits (up to float rounding) from ``gnn_model.dense_layout`` inputs:

* the three bias-free projections the edges read from node states (source, message,
  destination) and the node's own projection are one ``[N, 48] x [48, 192]`` product
  per layer, gathered per edge afterwards (``W h[src] == (W h)[src]``), so the only
  per-edge product left is the edge's own 48 x 48 (the edge bias moves to the
  destination's projection);
* each node's message sums are a gather of its incoming edges' rows into dense
  ``[N, K, 48]`` slots and a sum over K (Gather + ReduceSum in ONNX): no scatter, so
  sessions may use several threads;
* the padding edge that fills unused slots (see ``dense_layout``) has its gate zeroed
  and a zero message, so it never reaches a node; its own logit is junk and dropped.

The last layer's node update feeds nothing (only edge logits come out), so it is skipped.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from gnn_model.dense_layout import dense_inputs
from gnn_model.model import EdgeScorer, GatedLayer


class DenseEdgeScorer(nn.Module):
    """``EdgeScorer``'s function on ``dense_layout`` inputs, built from a trained ``EdgeScorer``.

    Its tensors are copies of the source model's weights, regrouped; the source is not modified
    and the twin is never trained or saved (export it again from the checkpoint instead).
    """

    def __init__(self, model: EdgeScorer) -> None:
        super().__init__()
        hid = model.config.hidden
        self.hidden = hid
        layers = cast(list[GatedLayer], list(model.layers))
        self.node_in = _frozen_copy(model.node_in)
        self.edge_in = _frozen_copy(model.edge_in)
        self.head = _frozen_copy(model.head)
        self.edge_norms = nn.ModuleList(_frozen_copy(layer.edge_norm) for layer in layers)
        self.node_norms = nn.ModuleList(_frozen_copy(layer.node_norm) for layer in layers)
        with torch.no_grad():
            for i, layer in enumerate(layers):
                # Node-side product, columns [source | message | destination + edge bias | self + bias].
                weight = torch.cat(
                    [layer.src_lin.weight, layer.msg_lin.weight, layer.dst_lin.weight, layer.self_lin.weight]
                )
                bias = torch.zeros(4 * hid)
                bias[2 * hid : 3 * hid] = layer.edge_lin.bias
                bias[3 * hid :] = layer.self_lin.bias
                self.register_buffer(f"node_weight{i}", weight.t().contiguous().clone())
                self.register_buffer(f"node_bias{i}", bias)
                self.register_buffer(f"edge_weight{i}", layer.edge_lin.weight.t().contiguous().clone())
        self.n_layers = len(layers)
        self.eval()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, edge_in: Tensor) -> Tensor:
        """Logits [E + 1] for ``edge_index`` [2, E + 1]; the last (the padding edge's) is meaningless."""
        hid = self.hidden
        src, dst = edge_index[0], edge_index[1]
        n, k = edge_in.shape
        slots = edge_in.reshape(-1)
        h = self.node_in(x)
        e = self.edge_in(edge_attr)
        rows = e.shape[0]
        not_padding = (torch.arange(rows) < rows - 1).to(e.dtype).unsqueeze(1)  # [E + 1, 1]
        for i in range(self.n_layers):
            p = h @ getattr(self, f"node_weight{i}") + getattr(self, f"node_bias{i}")
            ends = p[:, :hid].index_select(0, src) + p[:, 2 * hid : 3 * hid].index_select(0, dst)
            e = e + torch.relu(self.edge_norms[i](e @ getattr(self, f"edge_weight{i}") + ends))
            if i == self.n_layers - 1:
                break
            gate = torch.sigmoid(e) * not_padding
            msg = gate * p[:, hid : 2 * hid].index_select(0, src)
            num = msg.index_select(0, slots).reshape(n, k, hid).sum(1)
            den = gate.index_select(0, slots).reshape(n, k, hid).sum(1)
            h = h + torch.relu(self.node_norms[i](p[:, 3 * hid :] + num / (den + 1e-6)))
        return self.head(e).squeeze(-1)

    def score(self, x: np.ndarray, edge_index: np.ndarray, edge_attr: np.ndarray) -> np.ndarray:
        """Logits [E] for a graph (or disjoint union) given as ``EdgeScorer`` takes it."""
        d = dense_inputs(x, edge_index, edge_attr)
        with torch.inference_mode():
            out = self(*(torch.from_numpy(a) for a in (d.x, d.edge_index, d.edge_attr, d.edge_in)))
        return out.numpy()[:-1]


def _frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out
