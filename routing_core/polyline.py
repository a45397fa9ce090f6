"""Reading encoded polylines (Google's algorithm): the part the server and the driver app share.

The server (``graph_store.polyline``) turns the values into numpy arrays; the app
(``driver_app_stub.route_path``), which imports no server code, into a list of points.
"""

from __future__ import annotations


def decode_values(text: str) -> list[int]:
    """The signed integers of a polyline string: lat, lon deltas alternating, in units of 10^-precision degrees.

    Raises ValueError on a character outside the alphabet or a truncated string (a value cut
    short, or a latitude without its longitude)."""
    values: list[int] = []
    shift = result = 0
    for char in text:
        byte = ord(char) - 63
        if not 0 <= byte <= 0x3F:
            raise ValueError(f"invalid polyline character {char!r}")
        result |= (byte & 0x1F) << shift
        shift += 5
        if byte < 0x20:
            values.append(~(result >> 1) if result & 1 else result >> 1)
            shift = result = 0
    if shift or len(values) % 2:
        raise ValueError("truncated polyline")
    return values
