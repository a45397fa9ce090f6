"""The travel-time GNN: a speed factor per directed road edge and time of week, with quantiles.

The road network's directed edges are the nodes of its line graph; two of them are joined
when one can be driven after the other (not a U-turn onto the same road). Static edge
features pass through a few message-passing layers (PyTorch Geometric's ``MessagePassing``,
sum aggregation over normalised messages in both directions of travel, so a street learns
from what feeds it and from what it feeds). A head then combines each edge's embedding with
the features of a moment in the week and gives three log time multipliers per edge: the
10th, 50th and 90th percentiles (ordered by construction: p10 <= p50 <= p90).

A trip's predicted duration at quantile q is the sum over the pieces of its path of
``covered share x base seconds x exp(log multiplier_q)``: the loss is on whole trips, so the
model learns per-edge times without ever seeing a per-edge time.

Only gathers, ``scatter_add``, ``Linear`` and elementwise ops: exports to ONNX (opset 17).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

QUANTILES = (0.1, 0.5, 0.9)
TIME_FEATURES = 2 * 3 + 2 + 7  # time-of-day harmonics, weekend flag and its product, day of week
MINUTES_PER_WEEK = 7 * 24 * 60


@dataclass(frozen=True)
class EtaConfig:
    edge_features: int
    hidden: int = 32
    layers: int = 2
    time_features: int = TIME_FEATURES

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def time_features(minute_of_week: Tensor) -> Tensor:
    """Features of moments in the week (minutes since Monday 00:00, local time) [T] -> [T, TIME_FEATURES]."""
    m = torch.remainder(minute_of_week.to(torch.float32), float(MINUTES_PER_WEEK))
    day = torch.floor(m / 1440.0)
    tod = (m - day * 1440.0) / 1440.0 * (2 * math.pi)
    weekend = (day >= 5).to(torch.float32)
    cols = []
    for k in (1.0, 2.0, 3.0):
        cols += [torch.sin(k * tod), torch.cos(k * tod)]
    cols += [weekend, weekend * torch.cos(tod)]
    onehot = (day.unsqueeze(-1) == torch.arange(7, dtype=torch.float32)).to(torch.float32)
    return torch.cat([torch.stack(cols, dim=-1), onehot], dim=-1)


def minute_of_week(local_times: np.ndarray, bucket_minutes: int = 15) -> np.ndarray:
    """Minutes since Monday 00:00 of naive local datetime64 values, at the middle of their bucket."""
    minutes = np.asarray(local_times).astype("datetime64[m]").astype(np.int64)
    mow = ((minutes // 1440 + 3) % 7) * 1440 + minutes % 1440  # 1970-01-01 was a Thursday
    return ((mow // bucket_minutes) * bucket_minutes + bucket_minutes / 2.0).astype(np.float32)


class LineGraphConv(MessagePassing):
    """h' = h + ReLU(LN(W_self h + W_in sum_in(norm * h_src) + W_out sum_out(norm * h_dst)))."""

    def __init__(self, hidden: int) -> None:
        super().__init__(aggr="add", flow="source_to_target")
        self.self_lin = nn.Linear(hidden, hidden)
        self.in_lin = nn.Linear(hidden, hidden, bias=False)
        self.out_lin = nn.Linear(hidden, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor) -> Tensor:
        incoming = self.propagate(edge_index, x=h, norm=in_norm)
        outgoing = self.propagate(edge_index.flip(0), x=h, norm=out_norm)
        return h + torch.relu(self.norm(self.self_lin(h) + self.in_lin(incoming) + self.out_lin(outgoing)))

    def message(self, x_j: Tensor, norm: Tensor) -> Tensor:
        return norm.unsqueeze(-1) * x_j


class EtaGnn(nn.Module):
    def __init__(self, config: EtaConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.embed = nn.Sequential(nn.Linear(config.edge_features, h), nn.ReLU(), nn.Linear(h, h))
        self.convs = nn.ModuleList(LineGraphConv(h) for _ in range(config.layers))
        self.time_embed = nn.Sequential(nn.Linear(config.time_features, h), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 3))
        # Start at "the base model is right": every multiplier exp(0) = 1, spread small.
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, 0.0)
        with torch.no_grad():
            last.bias[0] = -1.0
            last.bias[2] = -1.0

    def edge_embedding(self, x: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor) -> Tensor:
        h = self.embed(x)
        for conv in self.convs:
            h = conv(h, edge_index, in_norm, out_norm)
        return h

    def head_out(self, h: Tensor, t: Tensor) -> Tensor:
        """Log multipliers [..., 3] (p10, p50, p90) from edge embeddings and time features (same leading shape)."""
        raw = self.head(torch.cat([h, self.time_embed(t)], dim=-1))
        mid = raw[..., 1]
        lo = mid - nn.functional.softplus(raw[..., 0]) - 1e-3
        hi = mid + nn.functional.softplus(raw[..., 2]) + 1e-3
        return torch.stack([lo, mid, hi], dim=-1)

    def log_multipliers_at(self, x: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor, edge: Tensor,
                           t: Tensor) -> Tensor:  # fmt: skip
        """Log multipliers [K, 3] of edges ``edge`` [K] at time features ``t`` [K, F]."""
        h = self.edge_embedding(x, edge_index, in_norm, out_norm)
        return self.head_out(h.index_select(0, edge), t)

    def forward(self, x: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor, minutes: Tensor) -> Tensor:
        """Multipliers of every edge at each of T moments (minutes of the week) [T]: [T, E, 3] (exp applied)."""
        h = self.edge_embedding(x, edge_index, in_norm, out_norm)
        t = time_features(minutes)
        n_t, n_e = t.shape[0], h.shape[0]
        hh = h.unsqueeze(0).expand(n_t, n_e, h.shape[1])
        tt = t.unsqueeze(1).expand(n_t, n_e, t.shape[1])
        return torch.exp(self.head_out(hh, tt))


class EtaEnsemble(nn.Module):
    """Several EtaGnn trained from different seeds: their log multipliers averaged (the geometric mean
    of the multipliers), which takes out most of one training run's luck."""

    def __init__(self, members: list[EtaGnn]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def log_multipliers_at(self, x: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor, edge: Tensor,
                           t: Tensor) -> Tensor:  # fmt: skip
        outs = [m.log_multipliers_at(x, edge_index, in_norm, out_norm, edge, t) for m in self.members]  # type: ignore[operator]
        return torch.stack(outs).mean(dim=0)

    def forward(self, x: Tensor, edge_index: Tensor, in_norm: Tensor, out_norm: Tensor, minutes: Tensor) -> Tensor:
        logs = [torch.log(m(x, edge_index, in_norm, out_norm, minutes)) for m in self.members]
        return torch.exp(torch.stack(logs).mean(dim=0))


class EtaExport(nn.Module):
    """The model with one map's edge inputs baked in: minutes of the week [T] -> multipliers [T, E, 3]."""

    def __init__(self, model: EtaGnn | EtaEnsemble, x: np.ndarray, edge_index: np.ndarray, in_norm: np.ndarray,
                 out_norm: np.ndarray) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.register_buffer("x", torch.from_numpy(np.ascontiguousarray(x)))
        self.register_buffer("edge_index", torch.from_numpy(np.ascontiguousarray(edge_index)))
        self.register_buffer("in_norm", torch.from_numpy(np.ascontiguousarray(in_norm)))
        self.register_buffer("out_norm", torch.from_numpy(np.ascontiguousarray(out_norm)))

    def forward(self, minutes: Tensor) -> Tensor:
        return self.model(self.x, self.edge_index, self.in_norm, self.out_norm, minutes)
