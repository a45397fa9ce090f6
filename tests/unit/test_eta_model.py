"""The travel-time model's parts on small made-up graphs: line graph, time features, training
recovers a known slowdown, the ensemble and its ONNX export, baselines, trip cleaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnn_model.eta import baselines
from gnn_model.eta.export import export_onnx, onnx_multipliers, torch_multipliers
from gnn_model.eta.features import edge_inputs, line_graph
from gnn_model.eta.model import TIME_FEATURES, EtaEnsemble, minute_of_week, time_features
from gnn_model.eta.training import TripBatch, fit_gnn, predict_trips
from gnn_model.eta.trips import Trips, clean_mask
from travel_times.learn import recency_weights


def _ring(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A two-way ring of n nodes: edges i -> i+1 and i+1 -> i."""
    a = np.arange(n)
    b = (a + 1) % n
    return np.concatenate([a, b]), np.concatenate([b, a])


def _inputs(n: int = 12):  # type: ignore[no-untyped-def]
    src, dst = _ring(n)
    e = src.size
    z = np.zeros(e)
    cls = np.where(np.arange(e) < n, "primary", "residential").astype(object)
    controls = {k: z for k in ("signals", "stops", "give_way", "crossings")}
    return edge_inputs(src, dst, np.full(e, 200.0), np.full(e, 36.0), cls, ("primary", "residential"),
                       np.zeros(e, bool), z, controls, np.full(e, np.nan), np.zeros(e, bool))  # fmt: skip


def _trips(n_trips: int, n: int, slow: float, seed: int) -> tuple[TripBatch, np.ndarray]:
    """Trips along the forward ring at Monday 08:00 (``slow`` x base time) and 03:00 (base time)."""
    rng = np.random.default_rng(seed)
    rows, edges = [], []
    minutes = np.where(rng.random(n_trips) < 0.5, 8 * 60 + 7.5, 3 * 60 + 7.5).astype(np.float32)
    base_s = np.full(2 * n, 20.0)
    dur = np.zeros(n_trips)
    for i in range(n_trips):
        start, length = rng.integers(0, n), rng.integers(2, 6)
        path = (start + np.arange(length)) % n
        rows += [i] * length
        edges += path.tolist()
        dur[i] = base_s[path].sum() * (slow if minutes[i] > 400 else 1.0)
    r, e = np.asarray(rows), np.asarray(edges)
    return TripBatch(r, e, np.ones(r.size), minutes, dur), base_s


def test_line_graph_joins_consecutive_edges_without_u_turns() -> None:
    src, dst = _ring(4)
    lg = line_graph(src, dst)
    pairs = set(map(tuple, lg.T.tolist()))
    assert (0, 1) in pairs  # 0->1 then 1->2
    assert (0, 4) not in pairs  # 0->1 then 1->0: a U-turn
    assert all(dst[a] == src[b] and dst[b] != src[a] for a, b in pairs)
    assert len(pairs) == 8  # every edge has one way on that is not back


def test_minute_of_week_and_time_features() -> None:
    # 2016-04-04 was a Monday; 2016-04-09 a Saturday.
    mow = minute_of_week(np.asarray(["2016-04-04T00:07:00", "2016-04-09T13:50:00"], dtype="datetime64[s]"))
    assert mow.tolist() == [7.5, 5 * 1440 + 13 * 60 + 45 + 7.5]
    t = time_features(torch.tensor(mow))
    assert t.shape == (2, TIME_FEATURES)
    assert t[0, 6] == 0 and t[1, 6] == 1  # weekend flag
    assert t[0, 8] == 1 and t[1, 8 + 5] == 1  # day-of-week one-hot


def test_training_learns_the_rush_hour_slowdown_and_the_ensemble_exports() -> None:
    inputs = _inputs()
    trips, base_s = _trips(300, 12, slow=2.0, seed=0)
    model, report = fit_gnn(inputs, base_s, trips, order=np.arange(len(trips)), max_epochs=150, members=2)
    assert isinstance(model, EtaEnsemble) and report.epochs >= 10
    test, _ = _trips(100, 12, slow=2.0, seed=1)
    pred = predict_trips(model, inputs, base_s, test)
    ratio = pred[:, 1] / test.duration_s
    assert np.median(np.abs(ratio - 1)) < 0.1
    assert np.all(pred[:, 0] <= pred[:, 1]) and np.all(pred[:, 1] <= pred[:, 2])
    rush = torch_multipliers(model, inputs, np.asarray([8 * 60 + 7.5, 3 * 60 + 7.5]))
    assert rush[0, :12, 1].mean() == pytest.approx(2.0, rel=0.15)
    assert rush[1, :12, 1].mean() == pytest.approx(1.0, rel=0.15)
    onnx_model = export_onnx(model, inputs)
    probe = np.asarray([7.5, 500.0, 9000.0], dtype=np.float32)
    np.testing.assert_allclose(onnx_multipliers(onnx_model, probe), torch_multipliers(model, inputs, probe),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_baselines_recover_known_factors() -> None:
    trips, base_s = _trips(400, 12, slow=1.0, seed=2)
    scaled = TripBatch(trips.row, trips.edge, trips.share, trips.minutes, trips.duration_s * 1.5)
    g = baselines.global_factor(scaled, base_s)
    assert g.predict(scaled, base_s)[:, 1] == pytest.approx(scaled.duration_s)
    cls = np.asarray([0] * 12 + [1] * 12)
    ls = baselines.class_least_squares(scaled, base_s, cls)
    assert np.median(ls.predict(scaled, base_s)[:, 1] / scaled.duration_s) == pytest.approx(1.0, abs=0.02)
    means = baselines.edge_means(scaled, base_s)
    assert means.at(np.asarray([100.0])).shape == (1, 24, 3)


def test_recency_weights_halve_every_half_life() -> None:
    at = np.asarray(["2016-01-01", "2016-03-01", "2016-04-30"], dtype="datetime64[s]")
    w = recency_weights(at, 60.0)
    assert w is not None
    assert w[-1] == 1.0 and w[1] == pytest.approx(0.5 ** (60 / 60), rel=0.02)
    assert recency_weights(at, None) is None


def test_cleaning_drops_what_cannot_be_a_drive() -> None:
    n = 5
    lat = np.full(n, 40.75)
    trips = Trips(np.asarray([str(i) for i in range(n)]), np.full(n, np.datetime64("2016-01-04T08:00:00")),
                  lat, np.full(n, -73.99), lat + np.asarray([0.01, 0.01, 0.0001, 0.01, 0.2]), np.full(n, -73.99),
                  np.asarray([600.0, 30.0, 600.0, 20_000.0, 300.0]))  # fmt: skip
    # ok; too short; ends 11 m apart; meter left running; 22 km in 5 min
    assert clean_mask(trips).tolist() == [True, False, False, False, False]
