"""The replay's HDR-style histogram against exact percentiles, and the chart it draws."""

from __future__ import annotations

import numpy as np
import pytest

from driver_app_stub.latency_report import (
    RELATIVE_PRECISION,
    ChartPoint,
    LatencyHistogram,
    distribution_svg,
    format_table,
    latency_over_time_svg,
    write_chart_html,
)

QUANTILES = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def _within_precision(got: float, exact: float) -> bool:
    # never below the exact sample percentile (beyond 0.5 us rounding), at most one bucket width above it
    return exact - 0.0005 <= got <= exact * (1 + RELATIVE_PRECISION) + 0.001


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_numpy_within_precision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # latencies over six decades: 10 us .. 10+ s, lognormal body with a heavy tail
    values = np.concatenate([rng.lognormal(np.log(60.0), 0.8, 50_000), rng.uniform(0.01, 12_000.0, 1_000)])
    hist = LatencyHistogram()
    for v in values:
        hist.record(float(v))
    assert hist.count == values.size
    for q in QUANTILES:
        exact = float(np.percentile(values, q, method="inverted_cdf"))
        got = hist.percentile(q)
        assert got is not None and _within_precision(got, exact), (q, got, exact)
    assert hist.max_ms == pytest.approx(values.max(), abs=0.0005)
    assert hist.min_ms == pytest.approx(values.min(), abs=0.0005)
    assert hist.mean_ms == pytest.approx(values.mean(), rel=1e-6, abs=0.001)


def test_known_small_set() -> None:
    hist = LatencyHistogram()
    for v in range(1, 101):  # 1..100 ms
        hist.record(float(v))
    s = hist.summary()
    for name, exact in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 100.0), ("max", 100.0)):
        assert _within_precision(s[name], exact), (name, s[name])  # type: ignore[arg-type]
    assert s["count"] == 100 and s["min"] == 1.0
    # sub-2 ms values have 1 us buckets: exact
    small = LatencyHistogram()
    for v in (0.25, 0.5, 1.0, 1.5, 2.0):
        small.record(v)
    assert small.percentile(50) == 1.0 and small.percentile(100) == 2.0 and small.percentile(0) == 0.25


def test_empty_and_bad_input() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(50) is None and hist.max_ms is None
    assert hist.summary()["p99"] is None and hist.summary()["count"] == 0
    assert hist.distribution() == []
    with pytest.raises(ValueError, match=r"0\.\.100"):
        hist.percentile(101)
    hist.record(-3.0)  # a clock step backwards counts as 0, never a negative bucket
    assert hist.percentile(100) == 0.0


def test_distribution_is_monotone_and_ends_at_max() -> None:
    rng = np.random.default_rng(5)
    hist = LatencyHistogram()
    for v in rng.exponential(80.0, 5_000):
        hist.record(float(v))
    dist = hist.distribution(nines=4)
    qs, vs = zip(*dist, strict=True)
    assert list(qs) == sorted(qs) and list(vs) == sorted(vs)
    assert qs[0] == 0.0 and qs[-1] == pytest.approx(99.99)


def _report(hist: LatencyHistogram) -> dict:
    return {"sent": 3, "ok": 2, "errors": {"http_503": 1}, "unanswered": 0, "late_sends": 1, "offered_rps": 1.5,
            "throughput_rps": 1.0, "cache_hit_ratio": 0.5, "latency_ms": hist.summary(), "interrupted": True,
            "config": {"input": "log.jsonl", "speed": 2.0, "url": "http://x"}}  # fmt: skip


def test_table_and_chart(tmp_path) -> None:
    hist = LatencyHistogram()
    for v in (80.0, 120.0):
        hist.record(v)
    table = format_table(_report(hist))
    assert "http_503: 1" in table and "late sends" in table and "partial report" in table
    points = [ChartPoint(0.0, 80.0, True), ChartPoint(0.5, 120.0, True), ChartPoint(1.0, 9000.0, False)]
    svg = latency_over_time_svg(points)
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and 'class="err"' in svg
    assert "<polyline" in distribution_svg(hist)
    out = tmp_path / "chart.html"
    write_chart_html(out, _report(hist), points, hist)
    page = out.read_text()
    assert page.count("<svg") == 2 and "<script" not in page and "log.jsonl" in page


def test_chart_thins_dots_but_bins_every_point() -> None:
    points = [ChartPoint(i / 1000, 50.0 + (i % 7), True) for i in range(50_000)]
    svg = latency_over_time_svg(points)
    assert 0 < svg.count("<circle") <= 20_000
    assert svg.count("<polyline") == 2  # p50 and p99 lines
