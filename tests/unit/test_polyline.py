"""Encoded polylines: Google's algorithm at precision 5 (OSRM ``polyline``) and 6 (``polyline6``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from graph_store import polyline

GOOGLE_EXAMPLE = "_p~iF~ps|U_ulLnnqC_mqNvxq`@"
GOOGLE_LAT = [38.5, 40.7, 43.252]
GOOGLE_LON = [-120.2, -120.95, -126.453]


def test_encode_google_example_at_precision_5() -> None:
    assert polyline.encode(GOOGLE_LAT, GOOGLE_LON, 5) == GOOGLE_EXAMPLE


def test_decode_google_example_at_precision_5() -> None:
    lat, lon = polyline.decode(GOOGLE_EXAMPLE, 5)
    np.testing.assert_allclose(lat, GOOGLE_LAT, atol=1e-9)
    np.testing.assert_allclose(lon, GOOGLE_LON, atol=1e-9)


def test_google_example_read_at_precision_6_is_ten_times_smaller() -> None:
    lat, lon = polyline.decode(GOOGLE_EXAMPLE, 6)
    np.testing.assert_allclose(lat, np.asarray(GOOGLE_LAT) / 10, atol=1e-9)
    np.testing.assert_allclose(lon, np.asarray(GOOGLE_LON) / 10, atol=1e-9)


@pytest.mark.parametrize("precision", [5, 6])
def test_roundtrip_random_coordinates(precision: int) -> None:
    rng = np.random.default_rng(1000 + precision)
    lat = rng.uniform(-90, 90, 500)
    lon = rng.uniform(-180, 180, 500)
    text = polyline.encode(lat, lon, precision)
    back_lat, back_lon = polyline.decode(text, precision)
    assert back_lat.shape == lat.shape and back_lon.shape == lon.shape
    half_unit = 0.5 * 10.0**-precision + 1e-12
    assert np.max(np.abs(back_lat - lat)) <= half_unit
    assert np.max(np.abs(back_lon - lon)) <= half_unit


@pytest.mark.parametrize("precision", [5, 6])
def test_roundtrip_is_exact_on_the_precision_grid(precision: int) -> None:
    rng = np.random.default_rng(7 + precision)
    scale = 10**precision
    lat = rng.integers(-90 * scale, 90 * scale, 200) / scale
    lon = rng.integers(-180 * scale, 180 * scale, 200) / scale
    text = polyline.encode(lat, lon, precision)
    back_lat, back_lon = polyline.decode(text, precision)
    np.testing.assert_array_equal(np.round(back_lat * scale), np.round(lat * scale))
    np.testing.assert_array_equal(np.round(back_lon * scale), np.round(lon * scale))
    # Re-encoding the decoded points gives the same string.
    assert polyline.encode(back_lat, back_lon, precision) == text


def test_roundtrip_of_repeated_points_and_extremes() -> None:
    lat = [0.0, 0.0, -89.999999, 89.999999, 60.1699]
    lon = [0.0, 0.0, -179.999999, 179.999999, 24.9384]
    back_lat, back_lon = polyline.decode(polyline.encode(lat, lon, 6), 6)
    np.testing.assert_allclose(back_lat, lat, atol=5e-7)
    np.testing.assert_allclose(back_lon, lon, atol=5e-7)


def test_precisions_differ_in_output() -> None:
    assert polyline.encode([60.1699], [24.9384], 5) != polyline.encode([60.1699], [24.9384], 6)


def test_empty_input_encodes_to_empty_string_and_back() -> None:
    assert polyline.encode([], [], 6) == ""
    lat, lon = polyline.decode("", 6)
    assert lat.size == 0 and lon.size == 0


@pytest.mark.parametrize(
    "text",
    [
        "_p~iF~ps|U_",  # a value cut in the middle
        "_p~iF",  # a latitude without its longitude
        "_p~iF~ps|U_ulLnnqC_mqNvxq",  # the example with its last character dropped
        "_p~iF~ps|U ",  # space is below the alphabet
        "abc\x7f",  # DEL is above the alphabet
        "_p~iF~ps|U\u00e9",  # non-ASCII
        "~~~~",  # continuation bits that never end
    ],
)
def test_malformed_strings_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        polyline.decode(text, 5)


def _encode_one_by_one(lat: np.ndarray, lon: np.ndarray, precision: int) -> str:
    """The algorithm value by value, as Google describes it: the reference for the vectorised encoder."""
    factor = 10**precision
    lat_i = np.round(lat * factor).astype(np.int64).tolist()
    lon_i = np.round(lon * factor).astype(np.int64).tolist()
    out, prev = [], (0, 0)
    for point in zip(lat_i, lon_i, strict=True):
        for value in (point[0] - prev[0], point[1] - prev[1]):
            value = ~(value << 1) if value < 0 else value << 1
            while value >= 0x20:
                out.append(chr((0x20 | (value & 0x1F)) + 63))
                value >>= 5
            out.append(chr(value + 63))
        prev = point
    return "".join(out)


@pytest.mark.parametrize("precision", [5, 6])
def test_vectorised_encoder_equals_the_value_by_value_algorithm(precision: int) -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(0, 30))
        lat = rng.uniform(-90, 90, n) if trial % 2 else 60.17 + rng.normal(0, 1e-3, n)
        lon = rng.uniform(-180, 180, n)
        assert polyline.encode(lat, lon, precision) == _encode_one_by_one(lat, lon, precision)


def test_encode_many_equals_encoding_each_polyline_alone() -> None:
    rng = np.random.default_rng(8)
    for _ in range(200):
        counts = rng.integers(0, 6, int(rng.integers(1, 8)))
        lat, lon = rng.uniform(-90, 90, counts.sum()), rng.uniform(-180, 180, counts.sum())
        bounds = np.concatenate(([0], np.cumsum(counts)))
        want = [polyline.encode(lat[a:b], lon[a:b], 6) for a, b in itertools.pairwise(bounds)]
        assert polyline.encode_many(lat, lon, counts, 6) == want
