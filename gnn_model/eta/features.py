"""Static features of directed road edges and the line graph the travel-time GNN runs on.

Inputs are plain arrays (the caller reads them off its road graph), so the model package never
depends on the graph store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTROL_KEYS = ("signals", "stops", "give_way", "crossings")


@dataclass(frozen=True)
class EdgeInputs:
    """What the GNN reads: features [E, F], line-graph edges [2, M] and their normalisations."""

    x: np.ndarray  # float32 [E, F]
    edge_index: np.ndarray  # int64 [2, M]: (edge driven first, edge driven next)
    in_norm: np.ndarray  # float32 [M]: 1 / in-degree of the next edge
    out_norm: np.ndarray  # float32 [M]: 1 / out-degree of the first edge


def line_graph(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pairs (e, f) with target(e) == source(f), U-turns (target(f) == source(e)) left out."""
    source = np.asarray(source, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    order = np.argsort(source, kind="stable")
    starts = np.searchsorted(source[order], target, side="left")
    ends = np.searchsorted(source[order], target, side="right")
    counts = ends - starts
    e = np.repeat(np.arange(source.size), counts)
    ramp = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    f = order[np.repeat(starts, counts) + ramp]
    keep = target[f] != source[e]
    return np.vstack([e[keep], f[keep]])


def edge_inputs(
    source: np.ndarray,
    target: np.ndarray,
    length_m: np.ndarray,
    speed_kph: np.ndarray,
    road_class: np.ndarray,
    classes: tuple[str, ...],
    oneway: np.ndarray,
    curvature: np.ndarray,
    controls: dict[str, np.ndarray],
    lanes: np.ndarray,
    maxspeed_tagged: np.ndarray,
) -> EdgeInputs:
    """Features per directed edge (see ``feature_names``) and the line graph."""
    n = int(np.asarray(source).size)
    cls = np.asarray([classes.index(c) if c in classes else len(classes) for c in road_class], dtype=np.int64)
    onehot = np.eye(len(classes) + 1, dtype=np.float32)[cls]
    lg = line_graph(source, target)
    indeg = np.bincount(lg[1], minlength=n).astype(np.float32)
    outdeg = np.bincount(lg[0], minlength=n).astype(np.float32)
    lanes = np.asarray(lanes, dtype=np.float32)
    known = np.isfinite(lanes)
    base_s = np.asarray(length_m) / (np.asarray(speed_kph) / 3.6)
    cols = [
        np.log1p(length_m) / 5.0,
        np.log(speed_kph) / 4.0,
        np.log1p(base_s) / 4.0,
        np.asarray(oneway, dtype=np.float32),
        np.clip(np.asarray(curvature, dtype=np.float32), 0.0, 2.0),
        *(np.clip(np.asarray(controls[k], dtype=np.float32), 0, 3) for k in CONTROL_KEYS),
        np.where(known, np.clip(lanes, 0, 8), 0.0) / 4.0,
        known.astype(np.float32),
        np.asarray(maxspeed_tagged, dtype=np.float32),
        np.log1p(indeg),
        np.log1p(outdeg),
    ]
    x = np.column_stack([onehot, np.column_stack(cols)]).astype(np.float32)
    in_norm = (1.0 / np.maximum(indeg[lg[1]], 1.0)).astype(np.float32)
    out_norm = (1.0 / np.maximum(outdeg[lg[0]], 1.0)).astype(np.float32)
    return EdgeInputs(x, lg, in_norm, out_norm)


def feature_names(classes: tuple[str, ...]) -> list[str]:
    return [*(f"class={c}" for c in (*classes, "other")), "log_length", "log_speed", "log_base_s", "oneway",
            "curvature", *CONTROL_KEYS, "lanes", "lanes_known", "maxspeed_tagged", "log_in_degree",
            "log_out_degree"]  # fmt: skip
