"""The edge-scoring GNN: a small residual edge-gated graph network on plain tensors.

``forward(x, edge_index, edge_attr) -> logits`` scores each directed candidate edge
(higher = more likely in a good route). Several problems of different sizes form one
batch as a disjoint union (PyTorch Geometric's ``Batch``): the layers only ever look at
an edge's two ends, so problems never mix. Only tensor ops that export to ONNX
(opset 17) are used: gathers, ``scatter_add``, ``LayerNorm``.

Layer (after Bresson & Laurent's gated GCN, as used by DeepACO):
    e' = e + ReLU(LN(A e + B h_src + C h_dst))
    h' = h + ReLU(LN(U h + sum_src sigmoid(e') * V h_src / (sum_src sigmoid(e') + eps)))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from gnn_model.features import EDGE_FEATURES, NODE_FEATURES


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 48
    layers: int = 6
    node_features: int = NODE_FEATURES
    edge_features: int = EDGE_FEATURES

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be >= 1")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class GatedLayer(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.edge_lin = nn.Linear(hidden, hidden)
        self.src_lin = nn.Linear(hidden, hidden, bias=False)
        self.dst_lin = nn.Linear(hidden, hidden, bias=False)
        self.self_lin = nn.Linear(hidden, hidden)
        self.msg_lin = nn.Linear(hidden, hidden, bias=False)
        self.edge_norm = nn.LayerNorm(hidden)
        self.node_norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, e: Tensor, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
        h_src = h.index_select(0, src)
        h_dst = h.index_select(0, dst)
        e = e + torch.relu(self.edge_norm(self.edge_lin(e) + self.src_lin(h_src) + self.dst_lin(h_dst)))
        gate = torch.sigmoid(e)
        index = dst.unsqueeze(-1).expand_as(gate)
        num = torch.zeros_like(h).scatter_add(0, index, gate * self.msg_lin(h_src))
        den = torch.zeros_like(h).scatter_add(0, index, gate)
        h = h + torch.relu(self.node_norm(self.self_lin(h) + num / (den + 1e-6)))
        return h, e


class EdgeScorer(nn.Module):
    """Plain ``nn.Module``: the inference policy. Training lives in ``gnn_model.training``."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        hid = self.config.hidden
        self.node_in = nn.Linear(self.config.node_features, hid)
        self.edge_in = nn.Linear(self.config.edge_features, hid)
        self.layers = nn.ModuleList(GatedLayer(hid) for _ in range(self.config.layers))
        self.head = nn.Sequential(nn.Linear(hid, hid), nn.ReLU(), nn.Linear(hid, 1))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Logits [E] for edges ``edge_index`` [2, E] of nodes ``x`` [N, F]."""
        src = edge_index[0]
        dst = edge_index[1]
        h = self.node_in(x)
        e = self.edge_in(edge_attr)
        for layer in self.layers:
            h, e = layer(h, e, src, dst)
        return self.head(e).squeeze(-1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
