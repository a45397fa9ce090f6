"""Small hand-made OSM XML files for tests (plain, .gz or .bz2 by the file's suffix)."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Iterable, Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

Way = tuple[int, list[int], Mapping[str, str]]


def osm_xml(
    nodes: Mapping[int, tuple[float, float]],
    ways: Iterable[Way],
    node_tags: Mapping[int, Mapping[str, str]] | None = None,
) -> str:
    """OSM XML text: ``nodes`` maps id -> (lat, lon); ``ways`` are (id, node refs, tags);
    ``node_tags`` optionally maps a node id to its tags."""
    lines = ["<?xml version='1.0' encoding='UTF-8'?>", '<osm version="0.6" generator="tests">']
    for node_id, (lat, lon) in nodes.items():
        tags = (node_tags or {}).get(node_id)
        if not tags:
            lines.append(f'  <node id="{node_id}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
            continue
        lines.append(f'  <node id="{node_id}" version="1" lat="{lat:.7f}" lon="{lon:.7f}">')
        lines.extend(f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items())
        lines.append("  </node>")
    for way_id, refs, tags in ways:
        lines.append(f'  <way id="{way_id}" version="1">')
        lines.extend(f'    <nd ref="{ref}"/>' for ref in refs)
        lines.extend(f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items())
        lines.append("  </way>")
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


def write_osm(
    path: Path,
    nodes: Mapping[int, tuple[float, float]],
    ways: Iterable[Way],
    node_tags: Mapping[int, Mapping[str, str]] | None = None,
) -> Path:
    data = osm_xml(nodes, ways, node_tags).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".bz2"):
        data = bz2.compress(data)
    path.write_bytes(data)
    return path


def grid_node(
    row: int, col: int, *, lat0: float = 60.17, lon0: float = 24.93, step: float = 0.001
) -> tuple[float, float]:
    """Coordinates of a point on a regular grid (about 110 m x 55 m cells at 60 deg N)."""
    return (lat0 + row * step, lon0 + col * step)
