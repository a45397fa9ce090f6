"""Training the travel-time GNN end to end on trip durations.

A trip is a sparse row over edges (the covered share of each edge on its path), a moment in
the week, and a measured duration. The predicted duration at quantile q is
``sum_e share_e * base_s_e * multiplier_q(e, moment)``; the loss is the absolute error of its
logarithm for the median (so the model's median ratio to reality is 1) and the pinball loss
of the logarithm for the 10th and 90th percentiles. Validation is by time: the last part of
the training period is held back to pick the number of epochs, then the model is trained again
on the whole period for that many epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gnn_model.eta.features import EdgeInputs
from gnn_model.eta.model import QUANTILES, EtaConfig, EtaEnsemble, EtaGnn, time_features


@dataclass(frozen=True)
class TripBatch:
    """Trips as sparse rows over edges: nnz entries (row, edge, share), a time row per trip, durations."""

    row: np.ndarray
    edge: np.ndarray
    share: np.ndarray
    minutes: np.ndarray  # float32 [N]: minute of the week (local) of each trip's departure
    duration_s: np.ndarray  # [N]
    weight: np.ndarray | None = None  # [N] per-trip loss weight (None: all 1)

    def __len__(self) -> int:
        return int(self.duration_s.size)

    def take(self, idx: np.ndarray) -> TripBatch:
        idx = np.asarray(idx, dtype=np.int64)
        remap = np.full(len(self), -1, dtype=np.int64)
        remap[idx] = np.arange(idx.size)
        keep = remap[self.row] >= 0
        return TripBatch(remap[self.row[keep]], self.edge[keep], self.share[keep], self.minutes[idx],
                         self.duration_s[idx], None if self.weight is None else self.weight[idx])  # fmt: skip


@dataclass
class FitReport:
    epochs: int
    best_val_loss: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, train, val)
    seconds: float = 0.0


def _tensors(inputs: EdgeInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(inputs.x), torch.from_numpy(inputs.edge_index), torch.from_numpy(inputs.in_norm),
            torch.from_numpy(inputs.out_norm))  # fmt: skip


def predict_trips(model: EtaGnn | EtaEnsemble, inputs: EdgeInputs, base_s: np.ndarray, trips: TripBatch) -> np.ndarray:
    """Predicted durations [N, 3] (p10, p50, p90) in seconds."""
    model.eval()
    with torch.no_grad():
        return _trip_log_pred(model, _tensors(inputs), torch.from_numpy(base_s.astype(np.float32)), trips).exp().numpy()


def _trip_log_pred(
    model: EtaGnn | EtaEnsemble, tensors: tuple[torch.Tensor, ...], base: torch.Tensor, trips: TripBatch
) -> torch.Tensor:
    row = torch.from_numpy(trips.row)
    edge = torch.from_numpy(trips.edge)
    t = time_features(torch.from_numpy(trips.minutes))
    x, edge_index, in_norm, out_norm = tensors
    log_mult = model.log_multipliers_at(x, edge_index, in_norm, out_norm, edge, t.index_select(0, row))
    contrib = (torch.from_numpy(trips.share.astype(np.float32)) * base.index_select(0, edge)).unsqueeze(-1)
    total = torch.zeros(len(trips), 3).index_add(0, row, contrib * torch.exp(log_mult))
    return torch.log(total.clamp_min(1e-3))


def _loss(log_pred: torch.Tensor, log_true: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    loss = torch.zeros(())
    for k, q in enumerate(QUANTILES):
        diff = log_true - log_pred[:, k]
        pin = torch.maximum(q * diff, (q - 1) * diff)
        mean = pin.mean() if weight is None else (pin * weight).sum() / weight.sum()
        loss = loss + mean * (2.0 if q == 0.5 else 1.0)
    return loss


def _train(model: EtaGnn, tensors: tuple[torch.Tensor, ...], base: torch.Tensor, train: TripBatch, epochs: int,
           val: TripBatch | None, lr: float, weight_decay: float) -> FitReport:  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    log_train = torch.from_numpy(np.log(train.duration_s).astype(np.float32))
    weight = None if train.weight is None else torch.from_numpy(train.weight.astype(np.float32))
    log_val = torch.from_numpy(np.log(val.duration_s).astype(np.float32)) if val is not None else None
    report = FitReport(epochs=epochs, best_val_loss=float("inf"))
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        loss = _loss(_trip_log_pred(model, tensors, base, train), log_train, weight)
        loss.backward()
        opt.step()
        if val is not None and log_val is not None and (epoch % 10 == 0 or epoch == epochs):
            model.eval()
            with torch.no_grad():
                v = float(_loss(_trip_log_pred(model, tensors, base, val), log_val))
            report.history.append((epoch, float(loss.detach()), v))
            if v < report.best_val_loss:
                report.best_val_loss, report.epochs = v, epoch
    return report


def fit_gnn(
    inputs: EdgeInputs,
    base_s: np.ndarray,
    trips: TripBatch,
    *,
    order: np.ndarray,
    seed: int = 0,
    max_epochs: int = 400,
    val_share: float = 0.2,
    config: EtaConfig | None = None,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    members: int = 1,
) -> tuple[EtaGnn | EtaEnsemble, FitReport]:
    """Fit on ``trips``; ``order`` sorts them by time (the last ``val_share`` picks the epochs). With
    ``members`` > 1, that many models (seeds ``seed``, ``seed + 1``, ...) are trained on all the trips
    for those epochs and averaged."""
    import time

    started = time.perf_counter()
    cfg = config or EtaConfig(edge_features=int(inputs.x.shape[1]))
    tensors = _tensors(inputs)
    base = torch.from_numpy(base_s.astype(np.float32))
    n_val = int(len(order) * val_share)
    torch.manual_seed(seed)
    probe = EtaGnn(cfg)
    report = _train(probe, tensors, base, trips.take(order[: len(order) - n_val]), max_epochs,
                    trips.take(order[len(order) - n_val :]), lr, weight_decay)  # fmt: skip
    trained = []
    for k in range(max(1, members)):
        torch.manual_seed(seed + k)
        model = EtaGnn(cfg)
        _train(model, tensors, base, trips, report.epochs, None, lr, weight_decay)
        trained.append(model.eval())
    report.seconds = time.perf_counter() - started
    return (trained[0] if len(trained) == 1 else EtaEnsemble(trained).eval()), report
