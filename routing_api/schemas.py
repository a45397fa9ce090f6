"""HTTP schemas of the driver API (separate from the SQL tables). Times are ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _utc_in_range(value: datetime) -> datetime:
    """The time in UTC (naive = UTC), within the years the service computes with (arrivals,
    traffic buckets, storage): aware and comparable, whatever offsets the client mixed."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC value
        utc = None
    if utc is None or not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise ValueError(f"must be between {EARLIEST_TIME.isoformat()} and {LATEST_TIME.isoformat()}")
    return utc


Time = Annotated[datetime, AfterValidator(_utc_in_range)]


class LatLon(BaseModel):
    lat: float = Field(ge=-90, le=90, description="Latitude, degrees")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees")


class TimeWindow(BaseModel):
    earliest: Time = Field(description="Service may start from this time")
    latest: Time = Field(description="Service should start by this time")

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.latest < self.earliest:
            raise ValueError("window ends before it starts (latest < earliest)")
        return self


class StopIn(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    service_s: float = Field(0.0, ge=0, le=86_400, description="Time spent at the stop, seconds")
    window: TimeWindow | None = None


class RouteOptions(BaseModel):
    time_budget_ms: float = Field(50.0, ge=1, le=10_000, description="Search time budget, milliseconds")
    eta_quantile: float = Field(
        0.5,
        description="Quantile of the learned travel times the plan is costed at: 0.5 the median, 0.9 a cautious "
        "plan for time windows (no effect without a learned profile); one of 0.1, 0.5, 0.9",
    )

    @field_validator("eta_quantile")
    @classmethod
    def _known_quantile(cls, q: float) -> float:
        if q not in (0.1, 0.5, 0.9):
            raise ValueError(f"eta_quantile must be one of 0.1, 0.5, 0.9 (the learned quantiles), got {q}")
        return q


class RouteRequestIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "driver_id": "van-17",
                    "start": {"lat": 60.1699, "lon": 24.9384},
                    "end": "return",
                    "depart_at": "2026-11-28T08:00:00+02:00",
                    "stops": [
                        {"id": "parcel-1", "lat": 60.1712, "lon": 24.9441, "service_s": 120},
                        {"id": "parcel-2", "lat": 60.1661, "lon": 24.9476,
                         "window": {"earliest": "2026-11-28T08:10:00+02:00", "latest": "2026-11-28T08:40:00+02:00"}},
                        {"id": "parcel-3", "lat": 60.1745, "lon": 24.9402},
                    ],
                    "options": {"time_budget_ms": 50},
                }
            ]
        }
    )  # fmt: skip

    driver_id: str = Field(min_length=1, max_length=128)
    start: LatLon
    end: Literal["return", "open"] | LatLon = "return"
    depart_at: Time | None = Field(None, description="Departure time; default now")
    stops: list[StopIn] = Field(min_length=1)
    options: RouteOptions = Field(default_factory=RouteOptions)

    @field_validator("stops")
    @classmethod
    def _unique_ids(cls, stops: list[StopIn]) -> list[StopIn]:
        seen: set[str] = set()
        for s in stops:
            if s.id in seen:
                raise ValueError(f"duplicate stop id {s.id!r}")
            seen.add(s.id)
        return stops


class StopPlan(BaseModel):
    id: str
    arrival: datetime
    departure: datetime
    late_s: float
    arrival_p10: datetime | None = Field(
        None, description="Arrival if every leg runs at its 10th percentile (learned profile)"
    )
    arrival_p90: datetime | None = Field(
        None, description="Arrival if every leg runs at its 90th percentile (learned profile)"
    )


class Leg(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    duration_s: float
    duration_p10_s: float | None = None
    duration_p90_s: float | None = None
    distance_m: float
    geometry: str = Field(description="Encoded polyline, precision 6")


class Versions(BaseModel):
    graph: int
    traffic_epoch: int
    model: str
    backend: str
    travel_profile: str | None = Field(None, description="Learned travel-time profile in force (None: base model)")


class ServedBy(BaseModel):
    worker: str
    batch_size: int
    backend: str


class RoutePublic(BaseModel):
    route_id: str
    driver_id: str
    order: list[str]
    stops: list[StopPlan]
    legs: list[Leg]
    total_duration_s: float
    total_distance_m: float
    feasible: bool
    late_stops: list[str]
    guided: bool = Field(description="True when the model's scores guided the search")
    degraded: bool = Field(
        False,
        description="True when the model failed and the plain k-nearest search answered "
        "(served_by.backend is then `fallback:knn`); such answers are not cached",
    )
    versions: Versions
    eta_quantile: float = Field(0.5, description="Quantile of the learned travel times the plan was costed at")
    cache: Literal["hit", "miss"]
    served_by: ServedBy
    timings_ms: dict[str, float]


class PositionIn(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timestamp: Time
    speed_mps: float | None = Field(None, ge=0, le=100)
    heading_deg: float | None = Field(None, ge=0, lt=360)


class DriverPublic(BaseModel):
    driver_id: str
    last_position: PositionIn | None
    current_route_id: str | None
    route_received_at: datetime | None
