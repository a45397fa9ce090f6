"""The driver simulator's parts without a service: paths, traffic world, driving, settings, stops files, summary."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from driver_app_stub.route_path import RoutePath, bearing_deg, decode_polyline, haversine_m
from driver_app_stub.simulator import (
    CONGESTED_FACTOR,
    FREE_FACTOR,
    ActiveLeg,
    ActivePlan,
    ConfigError,
    SimDriver,
    Simulation,
    SimulationConfig,
    StopPoint,
    TrafficWorld,
    format_summary,
    read_stops_file,
)
from graph_store import polyline

# A straight street in Helsinki running east, about 556 m (0.01 deg of longitude at 60 N).
WEST, MIDDLE, EAST = (60.17, 24.93), (60.17, 24.935), (60.17, 24.94)


def test_polyline_decoding_matches_the_service_encoder() -> None:
    rng = np.random.default_rng(0)
    lat = 60.1 + rng.random(50) * 0.1
    lon = 24.9 + rng.random(50) * 0.1
    points = decode_polyline(polyline.encode(lat, lon, 6), 6)
    assert np.allclose(np.asarray(points), np.column_stack((lat, lon)), atol=1e-6)
    assert decode_polyline("", 6) == []
    with pytest.raises(ValueError, match="truncated"):
        decode_polyline(polyline.encode(lat, lon, 6)[:-1], 6)
    with pytest.raises(ValueError, match="invalid"):
        decode_polyline("a b", 6)


def test_route_path_lengths_positions_and_headings() -> None:
    path = RoutePath([WEST, WEST, MIDDLE, (60.175, 24.935)])  # east, then north; the repeated point is dropped
    first = haversine_m(*WEST, *MIDDLE)
    assert path.segments == 2 and 270 < first < 290
    assert path.length_m == pytest.approx(first + haversine_m(*MIDDLE, 60.175, 24.935))
    half = path.position(first / 2)
    assert half.segment == 0 and half.lon == pytest.approx(24.9325, abs=1e-6) and abs(half.heading_deg - 90) < 0.1
    north = path.position(first + 10)
    assert north.segment == 1 and north.heading_deg < 0.1 and north.lat > 60.17
    assert path.position(1e9).lat == pytest.approx(60.175)  # clamped to the end
    assert path.segment_at(first) == 1  # a segment's end belongs to the next one
    assert path.segment_key(0) == RoutePath([WEST, MIDDLE]).segment_key(0)
    assert abs(bearing_deg(*EAST, *WEST) - 270) < 0.1
    assert RoutePath([WEST]).length_m == 0.0


def test_traffic_world_is_the_same_for_every_driver_and_seeded() -> None:
    world, again, other = TrafficWorld(7, 0.3), TrafficWorld(7, 0.3), TrafficWorld(8, 0.3)
    keys = [(i, i + 1, 2 * i, 3) for i in range(2000)]
    factors = np.asarray([world.factor(k) for k in keys])
    assert factors.tolist() == [again.factor(k) for k in keys]
    assert factors.tolist() != [other.factor(k) for k in keys]
    congested = (factors >= CONGESTED_FACTOR[0]) & (factors <= CONGESTED_FACTOR[1])
    free = (factors >= FREE_FACTOR[0]) & (factors <= FREE_FACTOR[1])
    assert (congested | free).all()
    assert 0.25 < congested.mean() < 0.35
    assert all(TrafficWorld(7, 0.0).factor(k) >= FREE_FACTOR[0] for k in keys[:100])


def _driver(congested_share: float = 0.0, service_s: float = 60.0) -> SimDriver:
    sim = Simulation(SimulationConfig(url="http://127.0.0.1:9", congested_share=congested_share, service_s=service_s,
                                      on_time_slack_s=30.0))  # fmt: skip
    stops = [StopPoint("a", *MIDDLE), StopPoint("b", *EAST)]
    driver = SimDriver(sim, "d1", StopPoint("start", *WEST), stops)
    t0 = driver.t
    legs = [ActiveLeg("a", RoutePath([WEST, MIDDLE]), t0, 30.0),
            ActiveLeg("b", RoutePath([MIDDLE, EAST]), t0 + timedelta(seconds=30 + service_s), 30.0)]  # fmt: skip
    driver.plan = ActivePlan(legs, epoch=0, provisional=False, route_id="r", made_at=t0)
    driver.remaining["a"].promised = t0 + timedelta(seconds=30)
    driver.remaining["b"].promised = t0 + timedelta(seconds=60 + service_s)
    return driver


def test_a_driver_drives_serves_and_marks_stops_done() -> None:
    driver = _driver()
    t0 = driver.t
    driver.advance(t0 + timedelta(seconds=10))
    # ~ a third of the first leg, at the plan's pace times a factor in 0.9..1.1
    assert 24.931 < driver.lon < 24.9325 and driver.lat == pytest.approx(60.17)
    assert 0.9 * 9.2 < driver.speed_mps < 1.1 * 9.4 and abs(driver.heading - 90) < 0.5  # type: ignore[operator]
    driver.advance(t0 + timedelta(seconds=40))
    assert [s.point.id for s in driver.done] == ["a"] and driver.service_until is not None
    assert driver.speed_mps == 0.0 and (driver.lat, driver.lon) == MIDDLE
    assert driver.lag_s() == 0.0  # no lateness while serving a stop
    driver.advance(t0 + timedelta(seconds=200))
    assert [s.point.id for s in driver.done] == ["a", "b"] and not driver.remaining
    stats = driver.sim.stats
    assert stats.stops_done == 2 and stats.stops_on_time == 2


def test_congestion_makes_a_driver_late_and_asks_for_a_new_plan() -> None:
    driver = _driver(congested_share=1.0)  # every segment at 0.35..0.6 of the plan's pace
    t0 = driver.t
    driver.advance(t0 + timedelta(seconds=20))
    assert driver.speed_mps < 0.6 * 9.4
    assert 5 < driver.lag_s() < 15  # 20 s planned, the distance of 7..12 s driven
    assert driver.replan_reason() is None  # within the cooldown after the plan
    driver.plan.made_at = t0 - timedelta(seconds=driver.sim.config.replan_cooldown_s)  # type: ignore[union-attr]
    assert driver.replan_reason() is None  # past the cooldown, but less late than the 120 s threshold
    driver.plan.legs[0].depart = t0 - timedelta(seconds=200)  # type: ignore[union-attr]  # the plan had it leave earlier
    assert driver.replan_reason() == "behind"
    driver.latest_epoch = 3
    assert driver.replan_reason() == "traffic"  # a newer traffic epoch than the plan's (0)
    driver.service_until = driver.t + timedelta(seconds=10)
    assert driver.replan_reason() is None  # never while serving a stop


def test_late_stop_is_not_on_time() -> None:
    driver = _driver(congested_share=1.0)
    t0 = driver.t
    driver.advance(t0 + timedelta(seconds=600))
    stats = driver.sim.stats
    # 30 s planned per leg at 0.35..0.6 of the pace: 50..86 s; the slack is 30 s: stop a is late
    assert stats.stops_done == 2 and stats.stops_on_time < 2


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"count": 0}, "count"),
        ({"speedup": -1.0}, "speedup"),
        ({"speedup": float("nan")}, "speedup"),
        ({"duration_s": 0.0}, "duration"),
        ({"stops_per_driver": 0}, "stops-per-driver"),
        ({"ping_interval_s": 0.0}, "ping-interval"),
        ({"congested_share": 1.5}, "congested-share"),
        ({"token": " "}, "token"),
        ({"stops_file": Path("/nonexistent/stops.csv")}, "stops-file"),
        ({"url": "ftp://example.org"}, "url"),
        ({"url": "127.0.0.1:8000"}, "url"),
    ],
)
def test_bad_settings_name_their_option(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError) as err:
        SimulationConfig(**{"url": "http://127.0.0.1:8000", **kwargs})
    assert err.value.option == option and str(err.value).startswith(f"--{option}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", "header must name columns lat and lon"),
        ("lat,lon\n60.1,24.9\n60.2,abc\n", "stops.csv:3: lat and lon must be numbers"),
        ("lat,lon\n95,24.9\n", "stops.csv:2: lat must be in"),
        ("id,lat,lon\na,60.1,24.9\na,60.2,24.9\n", "stops.csv:3: duplicate id 'a'"),
    ],
)
def test_bad_stops_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "stops.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_stops_file(path)


def test_stops_file_rows(tmp_path: Path) -> None:
    path = tmp_path / "stops.csv"
    path.write_text("lat,lon,id\n60.1,24.9,depot\n60.2,24.95,\n")
    assert read_stops_file(path) == [StopPoint("depot", 60.1, 24.9), StopPoint("p2", 60.2, 24.95)]


def test_summary_table_names_every_count() -> None:
    report = {
        "drivers": 3, "wall_s": 5.0, "simulated_s": 50.0, "config": {"speedup": 10.0}, "route_requests": 7,
        "service_routes": 5, "provisional_routes": 2, "replans": {"behind": 1, "traffic": 2}, "replans_total": 3,
        "pings": {"sent": 40, "accepted": 38}, "stops": {"total": 24, "done": 4, "on_time": 3, "on_time_share": 0.75},
        "errors": {"route_connect": 2}, "errors_total": 2, "traffic_epoch": {"start": 0, "end": 2, "seen": [0, 2]},
    }  # fmt: skip
    text = format_summary(report)
    for needle in ("route requests", "provisional routes 2", "behind 1, traffic 2", "accepted 38", "4/24",
                   "on time 3 (75.0%)", "route_connect 2", "0 -> 2"):  # fmt: skip
        assert needle in text, needle


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "http://127.0.0.1:9", "--count", "0"], "error: --count: must be in 1..10000"),
        (["--url", "http://127.0.0.1:9", "--speedup", "-2"], "error: --speedup"),
        (["--url", "localhost"], "error: --url"),
        (["--url", "http://127.0.0.1:9", "--stops-file", "/nonexistent.csv"], "error: --stops-file: no such file"),
        (["--url", "http://127.0.0.1:9", "--count", "three"], "argument --count: invalid int value"),
        (["--count", "3"], "the following arguments are required: --url"),
        (["--url", "http://127.0.0.1:9", "--report", "/nonexistent/dir/r.json"], "error: --report"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_message(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "routing_api.cli", "drivers", *argv], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_without_a_service_or_stops_file_says_so() -> None:
    proc = subprocess.run([sys.executable, "-m", "routing_api.cli", "drivers", "--url", "http://127.0.0.1:9",
                           "--duration", "1"], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "cannot reach the service at http://127.0.0.1:9 to draw stops" in proc.stderr
    assert "--stops-file" in proc.stderr and "Traceback" not in proc.stderr
