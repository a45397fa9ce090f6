"""Latency statistics of a replay: an HDR-style histogram, the printed table and the HTML chart.

``LatencyHistogram`` keeps counts in log-linear buckets, as HdrHistogram does with 3
significant digits: values are recorded in whole microseconds; below 2,048 us every
microsecond has its own bucket, above it each power-of-two range is split into 1,024
equal buckets. A percentile is the highest value of the bucket holding the sample of that
rank (rank = ceil(q/100 * count), the "inverted CDF" definition), so it is never below the
exact sample percentile and at most 1/1024 (0.098%) of it, plus 1 us of rounding, above.
The maximum is kept exactly.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUB_BUCKET_BITS = 10
SUB_BUCKETS = 1 << SUB_BUCKET_BITS  # buckets per power of two
RELATIVE_PRECISION = 1.0 / SUB_BUCKETS
REPORT_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


class LatencyHistogram:
    """Counts of latencies (milliseconds in, microsecond resolution), log-linear buckets."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0
        self._max_us = 0
        self._min_us: int | None = None
        self._sum_us = 0

    @staticmethod
    def _index(us: int) -> int:
        if us < 2 * SUB_BUCKETS:
            return us
        shift = us.bit_length() - SUB_BUCKET_BITS - 1
        return shift * SUB_BUCKETS + (us >> shift)

    @staticmethod
    def _highest(index: int) -> int:
        """Highest microsecond value that lands in bucket ``index``."""
        if index < 2 * SUB_BUCKETS:
            return index
        shift = index // SUB_BUCKETS - 1
        mantissa = index - shift * SUB_BUCKETS
        return ((mantissa + 1) << shift) - 1

    def record(self, latency_ms: float) -> None:
        us = max(0, round(latency_ms * 1000.0))
        idx = self._index(us)
        self._counts[idx] = self._counts.get(idx, 0) + 1
        self.count += 1
        self._sum_us += us
        self._max_us = max(self._max_us, us)
        self._min_us = us if self._min_us is None else min(self._min_us, us)

    def percentile(self, q: float) -> float | None:
        """The latency (ms) at or below which ``q`` percent of the recorded values lie; None when empty."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be in 0..100, got {q}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for idx in sorted(self._counts):
            seen += self._counts[idx]
            if seen >= rank:
                return min(self._highest(idx), self._max_us) / 1000.0
        return self._max_us / 1000.0

    @property
    def max_ms(self) -> float | None:
        return self._max_us / 1000.0 if self.count else None

    @property
    def min_ms(self) -> float | None:
        return self._min_us / 1000.0 if self._min_us is not None else None

    @property
    def mean_ms(self) -> float | None:
        return self._sum_us / self.count / 1000.0 if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """p50, p90, p99, p999, max, min, mean (ms, rounded to 0.001) and the sample count."""
        out: dict[str, float | int | None] = {name: _round(self.percentile(q)) for name, q in REPORT_PERCENTILES}
        out.update(max=_round(self.max_ms), min=_round(self.min_ms), mean=_round(self.mean_ms), count=self.count)
        return out

    def distribution(self, nines: float = 5.0, points_per_nine: int = 20) -> list[tuple[float, float]]:
        """(percentile, latency ms) pairs from 0 up to 100 - 10**-(nines-2), evenly spaced in "nines"."""
        if self.count == 0:
            return []
        out = []
        for i in range(int(nines * points_per_nine) + 1):
            q = 100.0 * (1.0 - 10.0 ** (-i / points_per_nine))
            value = self.percentile(q)
            if value is not None:
                out.append((q, value))
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# -- the printed table -------------------------------------------------------------------------------


def _cell(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.1f}"
    return str(x)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text summary of a replay report (what ``routing replay`` prints)."""
    lat = report["latency_ms"]
    lag = report.get("send_lag_ms") or {}
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(report["errors"].items())) or "none"
    ratio = report["cache_hit_ratio"]
    rows = [
        ("sent", report["sent"]),
        ("ok", report["ok"]),
        ("errors", errors),
        ("unanswered", report["unanswered"]),
        ("late sends", report["late_sends"]),
        ("send lag ms p50 / p99 / max", " / ".join(_cell(lag.get(k)) for k in ("p50", "p99", "max"))),
        ("offered req/s", report["offered_rps"]),
        ("throughput req/s", report["throughput_rps"]),
        ("cache hit ratio", "-" if ratio is None else f"{ratio:.3f}"),
        ("latency ms p50 / p90 / p99 / p99.9 / max",
         " / ".join(_cell(lat[k]) for k in ("p50", "p90", "p99", "p999", "max"))),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {_cell(value)}" for name, value in rows]
    if report.get("interrupted"):
        lines.append("(interrupted: partial report)")
    return "\n".join(lines)


# -- the chart -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartPoint:
    """One request: scheduled time (s after the start), latency (ms), whether it was answered 200."""

    t_s: float
    latency_ms: float
    ok: bool


W, H = 860, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 45
MAX_POINTS = 20_000


def _nice_steps(lo: float, hi: float) -> list[float]:
    """1-2-5 values from the largest one <= lo to the smallest one >= hi (lo, hi > 0)."""
    out: list[float] = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        out += [m * 10.0**e for m in (1, 2, 5)]
    first = max(i for i, v in enumerate(out) if v <= lo * (1 + 1e-9))
    last = min(i for i, v in enumerate(out) if v >= hi * (1 - 1e-9))
    return out[first : last + 1]


def _linear_ticks(hi: float, target: int = 6) -> list[float]:
    raw = hi / target
    step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    return [i * step for i in range(int(hi / step) + 1)]


def _fmt_ms(v: float) -> str:
    return f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"


class _LogY:
    """A log-scale latency axis from a 1-2-5 value below the data to one above it."""

    def __init__(self, values: Iterable[float]) -> None:
        vals = [v for v in values if v > 0]
        lo, hi = (min(vals) / 1.05, max(vals) * 1.05) if vals else (1.0, 10.0)
        self.ticks = _nice_steps(lo, max(hi, lo * 2))
        self.lo, self.hi = self.ticks[0], self.ticks[-1]

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        frac = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return TOP + (1 - frac) * (H - TOP - BOTTOM)

    def axis(self) -> list[str]:
        out = []
        for v in self.ticks:
            y = self(v)
            out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_ms(v)}</text>')  # fmt: skip
        return out


def _frame(title: str, x_label: str, body: list[str], legend: str = "") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
            f'<text x="{LEFT}" y="18" class="title">{html.escape(title)}</text>'
            f'<text x="{W - RIGHT}" y="18" text-anchor="end">{legend}</text>'
            f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="plot"/>'
            + "".join(body)
            + f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(x_label)}</text>'
            "</svg>")  # fmt: skip


def latency_over_time_svg(points: Sequence[ChartPoint]) -> str:
    """Each request as a dot (scheduled time vs latency, log scale; errors red), with p50 and p99 per time bin."""
    if len(points) > MAX_POINTS:  # a deterministic thinning keeps the file small; the bin lines use every point
        step = math.ceil(len(points) / MAX_POINTS)
        shown = list(points[::step])
    else:
        shown = list(points)
    y = _LogY(p.latency_ms for p in points)
    ticks = _linear_ticks(max((p.t_s for p in points), default=1.0) or 1.0)
    t_max = ticks[-1] if ticks[-1] >= max((p.t_s for p in points), default=0.0) else ticks[-1] + ticks[1]

    def x(t: float) -> float:
        return LEFT + t / t_max * (W - LEFT - RIGHT)

    body = y.axis()
    body += [f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t:g}</text>' for t in ticks]
    body += [f'<circle cx="{x(p.t_s):.1f}" cy="{y(p.latency_ms):.1f}" r="2.2" class="{"ok" if p.ok else "err"}"/>'
             for p in shown]  # fmt: skip
    bins = min(60, len(points) // 20)  # about 20 answers or more per bin, else no lines
    legend = '<tspan class="ok-t">&#9679; ok</tspan>  <tspan class="err-t">&#9679; error</tspan>'
    if bins >= 3:
        legend += '  <tspan class="p50-t">&#8212; p50</tspan>  <tspan class="p99-t">&#8212; p99</tspan> per time bin'
        groups: list[list[float]] = [[] for _ in range(bins)]
        span = max(p.t_s for p in points) or 1.0
        for p in points:
            if p.ok:
                groups[min(bins - 1, int(p.t_s / span * bins))].append(p.latency_ms)
        for q, cls in ((50.0, "p50"), (99.0, "p99")):
            coords = []
            for i, g in enumerate(groups):
                if g:
                    g.sort()
                    v = g[max(0, math.ceil(q / 100 * len(g)) - 1)]
                    coords.append(f"{x((i + 0.5) * span / bins):.1f},{y(v):.1f}")
            if len(coords) > 1:
                body.append(f'<polyline points="{" ".join(coords)}" class="{cls}"/>')
    return _frame("Latency over time (from the scheduled send time)", "scheduled time since start (s)", body, legend)


def distribution_svg(hist: LatencyHistogram) -> str:
    """Latency by percentile, x axis in "nines" (0, 90, 99, 99.9%, ...), as HdrHistogram plots it; as many
    nines as the sample count resolves (1,000 answers: up to 99.9%)."""
    nines = float(min(5, max(1, math.ceil(math.log10(max(hist.count, 2))))))
    dist = hist.distribution(nines=nines)
    y = _LogY(v for _, v in dist)

    def x(q: float) -> float:
        n = min(nines, -math.log10(max(1e-12, 1 - q / 100)))
        return LEFT + n / nines * (W - LEFT - RIGHT)

    body = y.axis()
    for i in range(int(nines) + 1):
        q = 100 * (1 - 10.0**-i)
        body.append(f'<text x="{x(q):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{q:g}%</text>')
    if dist:
        coords = " ".join(f"{x(q):.1f},{y(v):.1f}" for q, v in dist)
        body.append(f'<polyline points="{coords}" class="dist"/>')
    return _frame(f"Latency distribution ({hist.count} answers)", "percentile", body)


STYLE = """body{font-family:sans-serif;margin:20px;color:#222}svg{display:block;margin:12px 0}
text{font-size:11px;fill:#333}.title{font-size:13px;font-weight:bold}.plot{fill:#fafafa;stroke:#999}
.grid{stroke:#e2e2e2}.ok{fill:#2b6cb0;fill-opacity:.6}.err{fill:#c53030}.p50,.p99,.dist{fill:none;stroke-width:2}
.p50{stroke:#2f855a}.p99{stroke:#dd6b20}.dist{stroke:#2b6cb0}.ok-t{fill:#2b6cb0}.err-t{fill:#c53030}
.p50-t{fill:#2f855a}.p99-t{fill:#dd6b20}td,th{padding:2px 10px;text-align:left}"""


def write_chart_html(path: Path, report: dict[str, Any], points: Sequence[ChartPoint], hist: LatencyHistogram) -> None:
    """One self-contained HTML page (inline SVG, no scripts): summary table, latency over time, distribution."""
    cells = [line.split("  ", 1) for line in format_table(report).splitlines()]
    rows = "".join(f"<tr><th>{html.escape(c[0])}</th><td>{html.escape(c[-1].strip())}</td></tr>" for c in cells)
    cfg = report.get("config", {})
    title = f"Replay of {cfg.get('input', '?')} at {cfg.get('speed', '?')}x against {cfg.get('url', '?')}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3><table>{rows}</table>"
            f"{latency_over_time_svg(points)}{distribution_svg(hist)}</body></html>\n")  # fmt: skip
    path.write_text(page)
