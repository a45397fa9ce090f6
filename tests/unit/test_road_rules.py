"""Car rules: which ways are drivable, in which direction, at which speed."""

from __future__ import annotations

import pytest

from graph_store.road_rules import DEFAULT_SPEED_KPH, Direction, direction, is_drivable, parse_maxspeed, speed_kph

# -- is_drivable --------------------------------------------------------------------


@pytest.mark.parametrize(
    "highway",
    ["motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential", "living_street",
     "service", "motorway_link", "primary_link"],
)  # fmt: skip
def test_motor_vehicle_classes_are_drivable(highway: str) -> None:
    assert is_drivable({"highway": highway})


@pytest.mark.parametrize(
    "highway", ["footway", "cycleway", "path", "pedestrian", "steps", "track", "bridleway", "construction", "proposed"]
)
def test_non_motor_classes_are_not_drivable(highway: str) -> None:
    assert not is_drivable({"highway": highway})


def test_way_without_highway_is_not_drivable() -> None:
    assert not is_drivable({})
    assert not is_drivable({"railway": "rail"})


def test_area_is_not_drivable() -> None:
    assert not is_drivable({"highway": "residential", "area": "yes"})
    assert is_drivable({"highway": "residential", "area": "no"})


def test_emergency_service_roads_are_excluded() -> None:
    assert not is_drivable({"highway": "service", "service": "emergency_access"})


@pytest.mark.parametrize("service", ["parking_aisle", "parking", "driveway", "drive-through", "alley", "yes"])
def test_other_service_roads_are_drivable(service: str) -> None:
    assert is_drivable({"highway": "service", "service": service})


def test_service_value_on_a_non_service_road_does_not_exclude() -> None:
    assert is_drivable({"highway": "residential", "service": "emergency_access"})


@pytest.mark.parametrize("value", ["no", "private", "agricultural", "forestry", "emergency", "psv"])
def test_access_restrictions_exclude(value: str) -> None:
    assert not is_drivable({"highway": "residential", "access": value})


@pytest.mark.parametrize("value", ["yes", "destination", "permissive", "customers", "delivery"])
def test_access_values_that_allow(value: str) -> None:
    assert is_drivable({"highway": "residential", "access": value})


@pytest.mark.parametrize("key", ["motor_vehicle", "motorcar", "vehicle", "access"])
def test_each_access_key_alone_can_forbid(key: str) -> None:
    assert not is_drivable({"highway": "residential", key: "no"})


def test_motor_vehicle_yes_overrides_access_no() -> None:
    assert is_drivable({"highway": "residential", "access": "no", "motor_vehicle": "yes"})


def test_motor_vehicle_no_overrides_access_yes() -> None:
    assert not is_drivable({"highway": "residential", "access": "yes", "motor_vehicle": "no"})


def test_most_specific_key_decides_in_order() -> None:
    # motor_vehicle > motorcar > vehicle > access
    assert is_drivable({"highway": "primary", "vehicle": "no", "motorcar": "yes"})
    assert not is_drivable({"highway": "primary", "vehicle": "yes", "motorcar": "private"})
    assert is_drivable({"highway": "primary", "access": "private", "vehicle": "yes"})
    assert not is_drivable({"highway": "primary", "motorcar": "yes", "motor_vehicle": "no"})


# -- direction ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "true", "1", "YES"])
def test_oneway_forward(value: str) -> None:
    assert direction({"highway": "residential", "oneway": value}) == Direction.FORWARD


@pytest.mark.parametrize("value", ["-1", "reverse"])
def test_oneway_backward(value: str) -> None:
    assert direction({"highway": "residential", "oneway": value}) == Direction.BACKWARD


def test_two_way_by_default() -> None:
    assert direction({"highway": "residential"}) == Direction.BOTH
    assert direction({"highway": "primary", "oneway": "no"}) == Direction.BOTH


@pytest.mark.parametrize("junction", ["roundabout", "circular"])
def test_roundabout_is_oneway(junction: str) -> None:
    assert direction({"highway": "primary", "junction": junction}) == Direction.FORWARD


@pytest.mark.parametrize("highway", ["motorway", "motorway_link"])
def test_motorway_is_implied_oneway(highway: str) -> None:
    assert direction({"highway": highway}) == Direction.FORWARD


def test_oneway_no_on_a_motorway_is_two_way() -> None:
    assert direction({"highway": "motorway", "oneway": "no"}) == Direction.BOTH


def test_oneway_minus_one_on_a_roundabout_reverses() -> None:
    assert direction({"highway": "primary", "junction": "roundabout", "oneway": "-1"}) == Direction.BACKWARD


def test_trunk_is_not_implied_oneway() -> None:
    assert direction({"highway": "trunk"}) == Direction.BOTH


# -- parse_maxspeed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50", 50.0),
        ("50 km/h", 50.0),
        ("60kmh", 60.0),
        ("30 mph", 30 * 1.609344),
        ("25mph", 25 * 1.609344),
        ("10 knots", 18.52),
        ("FI:urban", 50.0),
        ("FI:rural", 80.0),
        ("DE:motorway", 110.0),
        ("RU:living_street", 10.0),
        ("50;30", 30.0),
        ("30 mph;50", 30 * 1.609344),
        (" 40 ", 40.0),
        ("42.5", 42.5),
    ],
)
def test_parse_maxspeed_values(value: str, expected: float) -> None:
    assert parse_maxspeed(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "garbage", "none", "signals", "walk", "fast mph", "0", "FI:nowhere", ";"])
def test_parse_maxspeed_unparseable_is_none(value: str | None) -> None:
    assert parse_maxspeed(value) is None


def test_parse_maxspeed_list_ignores_garbage_parts() -> None:
    assert parse_maxspeed("garbage;40") == 40.0


# -- speed_kph ----------------------------------------------------------------------


def test_speed_uses_maxspeed_when_it_parses() -> None:
    assert speed_kph({"highway": "residential", "maxspeed": "40"}) == 40.0


def test_speed_falls_back_to_class_default() -> None:
    for cls, default in DEFAULT_SPEED_KPH.items():
        assert speed_kph({"highway": cls}) == default
        assert speed_kph({"highway": cls, "maxspeed": "garbage"}) == default


@pytest.mark.parametrize("service", ["parking_aisle", "parking", "driveway", "drive-through", "alley"])
def test_slow_service_roads_run_at_half_speed(service: str) -> None:
    assert speed_kph({"highway": "service", "service": service}) == DEFAULT_SPEED_KPH["service"] / 2
    assert speed_kph({"highway": "service", "service": service, "maxspeed": "20"}) == 10.0


def test_plain_service_road_runs_at_full_speed() -> None:
    assert speed_kph({"highway": "service"}) == DEFAULT_SPEED_KPH["service"]
    assert speed_kph({"highway": "residential", "service": "driveway"}) == DEFAULT_SPEED_KPH["residential"]


def test_speed_is_bounded() -> None:
    assert speed_kph({"highway": "motorway", "maxspeed": "300"}) == 130.0
    assert speed_kph({"highway": "residential", "maxspeed": "2"}) == 5.0
    assert speed_kph({"highway": "service", "service": "driveway", "maxspeed": "6"}) == 5.0
