"""Cache keys for computed routes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np

ROUTE_KEY_PREFIX: Final = "route:v1:"


def _plain(value: object) -> object:
    """``value`` as plain JSON data (tuples become lists, numpy scalars Python numbers).

    Anything else is refused rather than stringified, so that two different values
    can never share a key by printing alike (1 vs "1", or a dict key 1 vs "1").
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        plain: dict[str, object] = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"route cache key: mapping keys must be str, got {type(name).__name__} {name!r}")
            plain[name] = _plain(item)
        return plain
    raise TypeError(f"route cache key: cannot encode {type(value).__name__} {value!r}")


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def route_cache_key(
    *,
    snapped_stops: Iterable[Sequence[object]],
    start: Sequence[object],
    end: Sequence[object] | str,
    depart_bucket: int,
    options: Mapping[str, object],
    graph_version: int | str,
    traffic_epoch: int,
    model_version: str,
    travel_profile: str | None = None,
) -> str:
    """The cache key of one route request: ``"route:v1:"`` + 64 hex digits.

    The digits are the SHA-256 of a canonical JSON document (sorted keys, no spaces)
    holding every argument, so any change in any of them gives another key, and the
    same request always gives the same key (across processes and Python versions).

    The key does not depend on the order ``snapped_stops`` are listed in: the optimiser
    decides the visiting order itself, so the same set of stops is the same problem.
    The stops are a multiset: a stop listed twice differs from one listed once.

    Arguments:
        snapped_stops: one descriptor per stop after snapping, e.g. ``(stop id, edge
            id, position along the edge in 1e-4 units)``; any tuple of JSON-encodable
            values (str, int, float, bool, None, numpy scalars, nested tuples/lists).
        start: the descriptor of the start position.
        end: the descriptor of the end position, or a rule such as ``"open"``.
        depart_bucket: departure time bucket (whatever resolution the caller keys on).
        options: request options that change the answer (str keys).
        graph_version: the road graph (map import) version.
        traffic_epoch: the traffic epoch of the snapshot the matrix came from.
        model_version: the model artifact checksum (and backend, if it matters).
        travel_profile: the learned travel-time profile in force (None: none; then the key is
            the same as before such profiles existed).

    Raises:
        TypeError: a value that is not plain JSON data (a set, an object, a non-str
            mapping key). ValueError: a NaN or infinite float.
    """
    stops = sorted((_plain(stop) for stop in snapped_stops), key=_canonical_json)
    document = {
        "stops": stops,
        "start": _plain(start),
        "end": _plain(end),
        "depart_bucket": _plain(depart_bucket),
        "options": _plain(options),
        "graph_version": _plain(graph_version),
        "traffic_epoch": _plain(traffic_epoch),
        "model_version": _plain(model_version),
    }
    if travel_profile is not None:
        document["travel_profile"] = _plain(travel_profile)
    digest = hashlib.sha256(_canonical_json(document).encode("ascii")).hexdigest()
    return ROUTE_KEY_PREFIX + digest
