"""The base travel-time model: time lost at traffic controls, on top of driving each edge at its speed.

An edge's base time is ``length / speed + delay``, where the delay sums what the edge's
controls cost on average (counted by the importer: controls on the edge and at its target
node, in its direction of travel). Each number is derived from a stated source:

* **Traffic signal: 17.3 s.** Webster's uniform delay (Webster 1958, "Traffic signal
  settings", Road Research Technical Paper 39; the first term of the Highway Capacity Manual's
  signalised-intersection delay, HCM 6th ed., ch. 19): ``d = C (1 - g/C)^2 / (2 (1 - X g/C))``
  with a city cycle C = 90 s, green share g/C = 0.5 and degree of saturation X = 0.7.
* **Stop sign: 5.3 s.** Braking from and accelerating back to an urban 25 km/h cruise,
  ``v/(2 a_dec) + v/(2 a_acc)``, with AASHTO's comfortable deceleration 3.4 m/s² (Green Book,
  stopping sight distance) and a passenger car's 1.5 m/s² acceleration, plus a 2 s full stop
  and look (a full stop is the law at a stop sign).
* **Give way: 2.6 s**, half a stop: most yields slow without stopping.
* **Pedestrian or rail crossing: 1.0 s** expected: most passes meet no one crossing.

Live observations (measured speeds) already include what controls cost; an edge with one
gets no delay added. The learned profile (``graph_store.learned_profile``) multiplies these
base times per edge and time of week.
"""

from __future__ import annotations

import numpy as np

from graph_store.osm_import import RoadNetwork


def webster_delay_s(cycle_s: float = 90.0, green_share: float = 0.5, saturation: float = 0.7) -> float:
    return cycle_s * (1.0 - green_share) ** 2 / (2.0 * (1.0 - saturation * green_share))


def stop_delay_s(cruise_kph: float = 25.0, decel: float = 3.4, accel: float = 1.5, standstill_s: float = 2.0) -> float:
    v = cruise_kph / 3.6
    return v / (2 * decel) + v / (2 * accel) + standstill_s


SIGNAL_DELAY_S = round(webster_delay_s(), 1)
STOP_DELAY_S = round(stop_delay_s(), 1)
GIVE_WAY_DELAY_S = round(STOP_DELAY_S / 2, 1)
CROSSING_DELAY_S = 1.0


def edge_delay_s(network: RoadNetwork) -> np.ndarray:
    """Seconds lost at the controls of each directed edge (zeros for a map imported without them)."""
    c = network.controls()
    return (
        SIGNAL_DELAY_S * c["signals"].astype(np.float64)
        + STOP_DELAY_S * c["stops"].astype(np.float64)
        + GIVE_WAY_DELAY_S * c["give_way"].astype(np.float64)
        + CROSSING_DELAY_S * c["crossings"].astype(np.float64)
    )


def edge_curvature(network: RoadNetwork) -> np.ndarray:
    """Length along the geometry over the straight chord, minus one (0 for a straight edge)."""
    off = network.geom_offsets
    lat0, lon0 = network.geom_lat[off[:-1]], network.geom_lon[off[:-1]]
    lat1, lon1 = network.geom_lat[off[1:] - 1], network.geom_lon[off[1:] - 1]
    k = np.cos(np.radians(lat0))
    chord = np.hypot((lat1 - lat0) * 111_195.0, (lon1 - lon0) * 111_195.0 * k)
    return np.clip(network.edge_length_m / np.maximum(chord, 1.0) - 1.0, 0.0, 5.0)
