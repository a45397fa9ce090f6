"""Traffic state: buckets, validation, and the edge speeds in force at a departure time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from graph_store.traffic import BUCKETS_PER_DAY, DayType, LiveObservation, ProfileEntry, TrafficState, bucket_of

# 2026-11-30 is a Monday, 2026-12-05 a Saturday, 2026-12-06 a Sunday.
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)
FRIDAY = datetime(2026, 12, 4, tzinfo=UTC)
SATURDAY = datetime(2026, 12, 5, tzinfo=UTC)
SUNDAY = datetime(2026, 12, 6, tzinfo=UTC)

# -- bucket_of ----------------------------------------------------------------------


def test_weekdays_and_weekend_days() -> None:
    assert bucket_of(MONDAY)[0] == DayType.WEEKDAY
    assert bucket_of(FRIDAY.replace(hour=23, minute=59))[0] == DayType.WEEKDAY
    assert bucket_of(SATURDAY)[0] == DayType.WEEKEND
    assert bucket_of(SUNDAY.replace(hour=23, minute=59))[0] == DayType.WEEKEND


@pytest.mark.parametrize(
    ("hour", "minute", "bucket"),
    [(0, 0, 0), (0, 14, 0), (0, 15, 1), (0, 29, 1), (0, 30, 2), (8, 30, 34), (8, 44, 34), (8, 45, 35), (12, 0, 48),
     (23, 45, 95), (23, 59, 95)],
)  # fmt: skip
def test_fifteen_minute_buckets(hour: int, minute: int, bucket: int) -> None:
    assert bucket_of(MONDAY.replace(hour=hour, minute=minute, second=59)) == (DayType.WEEKDAY, bucket)


def test_every_minute_of_a_day_maps_to_its_bucket() -> None:
    seen = {bucket_of(MONDAY + timedelta(minutes=m))[1] for m in range(24 * 60)}
    assert seen == set(range(BUCKETS_PER_DAY))


def test_offset_time_is_bucketed_on_its_own_clock() -> None:
    # 08:30 at UTC-5 is 13:30 UTC: the bucket is that of 08:30.
    when = datetime(2026, 11, 30, 8, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert bucket_of(when) == (DayType.WEEKDAY, 34)
    assert bucket_of(when.astimezone(UTC)) == (DayType.WEEKDAY, 54)


def test_day_type_is_taken_on_its_own_clock() -> None:
    # Saturday 01:00 at UTC+3 is still Friday 22:00 in UTC.
    when = datetime(2026, 12, 5, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert bucket_of(when) == (DayType.WEEKEND, 4)
    assert bucket_of(when.astimezone(UTC)) == (DayType.WEEKDAY, 88)


def test_naive_time_is_read_as_given() -> None:
    assert bucket_of(datetime(2026, 12, 6, 17, 5)) == (DayType.WEEKEND, 68)


def test_day_type_parse() -> None:
    assert DayType.parse("weekday") == DayType.WEEKDAY
    assert DayType.parse("WEEKEND") == DayType.WEEKEND
    with pytest.raises(ValueError, match="day_type"):
        DayType.parse("holiday")


# -- validation ---------------------------------------------------------------------


def test_profile_entry_valid() -> None:
    p = ProfileEntry(DayType.WEEKDAY, 95, 0.5, road_class="primary")
    assert p.edge is None
    q = ProfileEntry(DayType.WEEKEND, 0, 10.0, edge=3)
    assert q.road_class is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bucket": 10, "speed_factor": 0.5},  # neither target
        {"bucket": 10, "speed_factor": 0.5, "road_class": "primary", "edge": 1},  # both targets
        {"bucket": -1, "speed_factor": 0.5, "road_class": "primary"},
        {"bucket": 96, "speed_factor": 0.5, "road_class": "primary"},
        {"bucket": 10, "speed_factor": 0.0, "road_class": "primary"},
        {"bucket": 10, "speed_factor": 0.009, "road_class": "primary"},
        {"bucket": 10, "speed_factor": 10.5, "road_class": "primary"},
        {"bucket": 10, "speed_factor": -1.0, "edge": 1},
    ],
)
def test_profile_entry_invalid(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ProfileEntry(DayType.WEEKDAY, **kwargs)


def test_live_observation_valid() -> None:
    obs = LiveObservation(1, 0.5, MONDAY, MONDAY + timedelta(seconds=1))
    assert obs.speed_kph == 0.5
    LiveObservation(1, 200.0, MONDAY, MONDAY + timedelta(minutes=15))


@pytest.mark.parametrize("speed", [0.0, 0.4, -5.0, 200.5, 1000.0])
def test_live_observation_bad_speed(speed: float) -> None:
    with pytest.raises(ValueError, match="speed_kph"):
        LiveObservation(1, speed, MONDAY, MONDAY + timedelta(minutes=5))


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(seconds=-1), timedelta(hours=-2)])
def test_live_observation_must_expire_after_it_was_observed(delta: timedelta) -> None:
    with pytest.raises(ValueError, match="expires_at"):
        LiveObservation(1, 30.0, MONDAY, MONDAY + delta)


# -- edge_speeds --------------------------------------------------------------------

FREE = np.array([50.0, 50.0, 30.0, 30.0, 80.0, 20.0])
CLASSES = np.array(["primary", "primary", "residential", "residential", "motorway", "service"], dtype=object)
MON_0830 = MONDAY.replace(hour=8, minute=30)


def test_no_traffic_is_free_flow() -> None:
    speeds = TrafficState().edge_speeds(FREE, CLASSES, MON_0830)
    np.testing.assert_array_equal(speeds, FREE)
    assert speeds is not FREE


def test_class_factor_applies_to_that_class_in_that_bucket() -> None:
    state = TrafficState(profile=(ProfileEntry(DayType.WEEKDAY, 34, 0.5, road_class="primary"),))
    np.testing.assert_allclose(state.edge_speeds(FREE, CLASSES, MON_0830), [25, 25, 30, 30, 80, 20])
    # Other buckets, and the same bucket on a weekend, are free flow.
    np.testing.assert_array_equal(state.edge_speeds(FREE, CLASSES, MON_0830 + timedelta(minutes=15)), FREE)
    np.testing.assert_array_equal(state.edge_speeds(FREE, CLASSES, SATURDAY.replace(hour=8, minute=30)), FREE)


def test_several_class_factors() -> None:
    state = TrafficState(
        profile=(
            ProfileEntry(DayType.WEEKEND, 0, 0.5, road_class="residential"),
            ProfileEntry(DayType.WEEKEND, 0, 2.0, road_class="service"),
        )
    )
    np.testing.assert_allclose(state.edge_speeds(FREE, CLASSES, SUNDAY), [50, 50, 15, 15, 80, 40])


def test_edge_factor_applies_to_free_flow_of_that_edge() -> None:
    state = TrafficState(
        profile=(
            ProfileEntry(DayType.WEEKDAY, 34, 0.5, road_class="primary"),
            ProfileEntry(DayType.WEEKDAY, 34, 0.2, edge=1),
            ProfileEntry(DayType.WEEKDAY, 34, 0.8, edge=2),
        )
    )
    # The edge entry replaces the class factor on its edge (from free flow, not compounded).
    np.testing.assert_allclose(state.edge_speeds(FREE, CLASSES, MON_0830), [25, 10, 24, 30, 80, 20])


def test_live_observation_overrides_profile() -> None:
    state = TrafficState(
        profile=(ProfileEntry(DayType.WEEKDAY, 34, 0.5, road_class="primary"),),
        live=(LiveObservation(0, 7.0, MON_0830 - timedelta(minutes=1), MON_0830 + timedelta(minutes=10)),),
    )
    np.testing.assert_allclose(state.edge_speeds(FREE, CLASSES, MON_0830), [7, 25, 30, 30, 80, 20])


def test_expired_live_observations_are_ignored() -> None:
    obs = LiveObservation(4, 10.0, MON_0830, MON_0830 + timedelta(minutes=10))
    state = TrafficState(live=(obs,))
    assert state.edge_speeds(FREE, CLASSES, MON_0830 + timedelta(minutes=9))[4] == 10.0
    np.testing.assert_array_equal(state.edge_speeds(FREE, CLASSES, MON_0830 + timedelta(minutes=10)), FREE)
    np.testing.assert_array_equal(state.edge_speeds(FREE, CLASSES, MON_0830 + timedelta(hours=3)), FREE)


def test_live_expiry_compares_instants_across_offsets() -> None:
    obs = LiveObservation(3, 5.0, MON_0830, MON_0830 + timedelta(minutes=10))
    state = TrafficState(live=(obs,))
    helsinki = timezone(timedelta(hours=2))
    # 10:35 at UTC+2 is 08:35 UTC: the observation is still valid.
    assert state.edge_speeds(FREE, CLASSES, MON_0830.replace(hour=10, minute=35, tzinfo=helsinki))[3] == 5.0
    # 10:45 at UTC+2 is 08:45 UTC: expired.
    assert state.edge_speeds(FREE, CLASSES, MON_0830.replace(hour=10, minute=45, tzinfo=helsinki))[3] == 30.0


def test_latest_live_observation_of_an_edge_wins() -> None:
    state = TrafficState(
        live=(
            LiveObservation(2, 10.0, MON_0830, MON_0830 + timedelta(hours=1)),
            LiveObservation(2, 12.0, MON_0830, MON_0830 + timedelta(minutes=5)),
        )
    )
    assert state.edge_speeds(FREE, CLASSES, MON_0830)[2] == 12.0
    # Once the later one expires, the earlier one still holds.
    assert state.edge_speeds(FREE, CLASSES, MON_0830 + timedelta(minutes=6))[2] == 10.0


def test_entries_for_edges_outside_the_map_are_ignored() -> None:
    state = TrafficState(
        profile=(ProfileEntry(DayType.WEEKDAY, 34, 0.5, edge=99),),
        live=(LiveObservation(99, 10.0, MON_0830, MON_0830 + timedelta(hours=1)),),
    )
    np.testing.assert_array_equal(state.edge_speeds(FREE, CLASSES, MON_0830), FREE)


def test_active_live() -> None:
    state = TrafficState(
        live=(
            LiveObservation(0, 10.0, MON_0830, MON_0830 + timedelta(minutes=5)),
            LiveObservation(5, 11.0, MON_0830, MON_0830 + timedelta(minutes=20)),
        )
    )
    edges, speeds = state.active_live(MON_0830 + timedelta(minutes=10))
    assert edges.tolist() == [5] and speeds.tolist() == [11.0]


def test_weight_key_equal_exactly_when_speeds_are_equal() -> None:
    state = TrafficState(
        profile=(ProfileEntry(DayType.WEEKDAY, 34, 0.5, road_class="primary"),),
        live=(LiveObservation(5, 3.0, MON_0830, MON_0830 + timedelta(minutes=20)),),
    )
    times = [
        MON_0830,
        MON_0830 + timedelta(minutes=5),  # same bucket, same live
        MON_0830 + timedelta(minutes=15),  # no profile bucket, live still on
        MON_0830 + timedelta(minutes=25),  # no profile, live expired
        MON_0830 + timedelta(hours=5),  # no profile, live expired
        SATURDAY.replace(hour=8, minute=30),  # weekend: no profile, live expired
    ]
    for t1 in times:
        for t2 in times:
            same_speeds = np.array_equal(state.edge_speeds(FREE, CLASSES, t1), state.edge_speeds(FREE, CLASSES, t2))
            if state.weight_key(t1) == state.weight_key(t2):
                assert same_speeds, (t1, t2)
    assert state.weight_key(times[0]) == state.weight_key(times[1])
    assert state.weight_key(times[0]) != state.weight_key(times[2])
    assert state.weight_key(times[2]) != state.weight_key(times[3])
    assert state.weight_key(times[3]) == state.weight_key(times[4])
