"""NYC taxi rows -> route requests: parsing, "close by" drop-offs, minute spreading (no service needed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from driver_app_stub.nyc_taxi import NEW_YORK, BBox, TaxiTrip, TripPlan, build_requests, read_trips, request_times
from driver_app_stub.replay import ReplayError

ROW = ("07290D3599E7A0D62097A346EFCC1FB5,E7750A37CAB07D0DFF0AF7E3573AC141,2013-01-01 00:00:00,2013-01-01 00:02:00,"
       "120,0.44,-73.956528,40.716976,-73.962440,40.715008,CSH,3.50,0.50,0.50,0.00,0.00,4.50")  # fmt: skip
BASE = datetime(2013, 1, 1, 0, 0, tzinfo=NEW_YORK)
MIDTOWN = (40.7500, -73.9850)


def _trip(line: int, pickup_min: float, dropoff_min: float, dropoff: tuple[float, float],
          pickup: tuple[float, float] = MIDTOWN, medallion: str = "ABCDEF0123456789") -> TaxiTrip:  # fmt: skip
    return TaxiTrip(line, medallion, BASE + timedelta(minutes=pickup_min), BASE + timedelta(minutes=dropoff_min),
                    pickup, dropoff)  # fmt: skip


def _north(km: float) -> tuple[float, float]:
    return (MIDTOWN[0] + km / 111.2, MIDTOWN[1])


def test_read_trips_parses_columns(tmp_path: Path) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(ROW + "\n\n" + ROW.replace("00:00:00,2013", "00:01:00,2013") + "\n")
    trips = read_trips(path)
    assert [t.line for t in trips] == [1, 3]
    t = trips[0]
    assert t.pickup == (40.716976, -73.956528) and t.dropoff == (40.715008, -73.962440)
    assert (
        t.pickup_at == BASE
        and t.dropoff_at == BASE + timedelta(minutes=2)
        and t.pickup_at.utcoffset() == timedelta(hours=-5)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [(ROW + "\n" + ROW.rsplit(",", 1)[0] + "\n", r"trips.csv:2: expected 17 columns"),
     (ROW.replace("2013-01-01 00:00:00", "1/1/2013 0:00", 1), r"trips.csv:1: column pickup_datetime: not a time"),
     (ROW.replace("-73.956528", "east"), r"trips.csv:1: column pickup_longitude: not a number"),
     (ROW.replace("40.715008", ""), r"trips.csv:1: column dropoff_latitude: not a number"),
     ("", "no trips"), ("\x00\x01binary", "expected 17 columns")],
)  # fmt: skip
def test_bad_rows_name_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(text)
    with pytest.raises(ReplayError, match=message):
        read_trips(path)


def test_close_by_dropoffs_are_near_in_place_and_time() -> None:
    trips = [
        _trip(1, 0, 10, _north(0.0)),
        _trip(2, 1, 12, _north(0.5)),  # near, 2 min later: in
        _trip(3, 2, 14, _north(3.0)),  # 3 km away: out
        _trip(4, 3, 9, _north(0.2)),  # dropped off before trip 1: out (for trip 1)
        _trip(5, 4, 24, _north(0.3)),  # 14 min after: in
        _trip(6, 5, 26, _north(0.1)),  # 16 min after: out (window 15)
        _trip(7, 6, 10, _north(0.9)),  # same drop-off minute as trip 1: in
    ]
    records = build_requests(trips, TripPlan(k=9, radius_km=1.0, window_min=15, spread_minutes=False))
    first = next(r for r in records if r.body["stops"][0]["id"] == "trip-1")
    assert [s["id"] for s in first.body["stops"]] == ["trip-1", "trip-7", "trip-2", "trip-5"]
    assert first.body["start"] == {"lat": MIDTOWN[0], "lon": MIDTOWN[1]} and first.body["end"] == "open"
    assert first.body["depart_at"] == BASE.isoformat() and first.body["driver_id"] == "taxi-abcdef012345"
    assert "options" not in first.body
    # k caps the extra stops; records come out in request-time order
    capped = build_requests(trips, TripPlan(k=1, spread_minutes=False, time_budget_ms=20))
    assert [len(r.body["stops"]) for r in capped if r.body["stops"][0]["id"] == "trip-1"] == [2]
    assert [r.at for r in capped] == sorted(r.at for r in capped) and len(capped) == len(trips)
    assert capped[0].body["options"] == {"time_budget_ms": 20}


def test_whole_minutes_are_spread_over_the_minute() -> None:
    trips = [_trip(i, 0, 5, MIDTOWN) for i in range(4)] + [_trip(9, 1.5, 5, MIDTOWN)]
    times = request_times(trips, spread_minutes=True)
    assert [(t - BASE).total_seconds() for t in times] == [0.0, 15.0, 30.0, 45.0, 90.0]
    assert request_times(trips, spread_minutes=False) == [t.pickup_at for t in trips]


def test_options_are_validated() -> None:
    for kw, message in (({"k": -1}, "--k"), ({"radius_km": 0}, "--radius-km"), ({"window_min": -1}, "--window-min"),
                        ({"time_budget_ms": 0.5}, "--time-budget-ms")):  # fmt: skip
        with pytest.raises(ReplayError, match=message):
            TripPlan(**kw)  # type: ignore[arg-type]
    assert BBox.parse("40.7,-74.0,40.8,-73.9").contains((40.75, -73.95))
    assert not BBox.parse("40.7,-74.0,40.8,-73.9").contains((0.0, 0.0))
    for text in ("40.7,-74.0,40.8", "a,b,c,d", "40.8,-74.0,40.7,-73.9", "nan,-74,40.8,-73.9"):
        with pytest.raises(ReplayError, match="--map-bbox"):
            BBox.parse(text)
