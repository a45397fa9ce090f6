"""Corrupt map files: random byte damage to a real ``.osm.pbf`` (the Helsinki extract) is refused
with ``MapImportError`` (CLI: exit 2, ``error: ...``, no traceback) and never touches the stored
maps.

The imports run in a child process: a crash inside the OSM reader would end that process and
fail the test with its output, instead of taking the test run down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

import migrations
from graph_store.repository import MapRepository, make_engine

SEEDS = range(12)

# For each damaged file: try the import, print one JSON line saying how it ended.
_IMPORT_EACH = """
import json, sys
from pathlib import Path
from graph_store.osm_import import MapImportError
from graph_store.repository import MapRepository, make_engine
repo = MapRepository(make_engine(sys.argv[1]))
for name in sys.argv[2:]:
    try:
        result = repo.import_map(Path(name))
    except MapImportError as exc:
        print(json.dumps({"file": name, "outcome": "refused", "message": str(exc)}), flush=True)
    else:
        print(json.dumps({"file": name, "outcome": "imported", "map": result.map.id}), flush=True)
"""


def corrupt(data: bytes, seed: int) -> bytes:
    """``data`` damaged in one of three ways picked by ``seed``: bytes flipped at random places,
    a run of random bytes written over it, or cut short."""
    rng = np.random.default_rng(seed)
    buf = bytearray(data)
    kind = seed % 3
    if kind == 0:
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 33))):
            buf[pos] ^= int(rng.integers(1, 256))
    elif kind == 1:
        start = int(rng.integers(0, len(buf) - 64))
        buf[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    else:
        del buf[int(rng.integers(16, len(buf) - 1)) :]
    return bytes(buf)


def _maps(engine) -> list[tuple[int, str, bool]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(text("SELECT id, source_checksum, is_active FROM map_versions ORDER BY id"))
        ]


def _stored_counts(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        nodes = conn.execute(text("SELECT count(*) FROM road_nodes")).scalar_one()
        edges = conn.execute(text("SELECT count(*) FROM road_edges")).scalar_one()
    return int(nodes), int(edges)


def test_random_damage_to_a_real_pbf_never_crashes_nor_touches_stored_maps(tmp_path: Path,
                                                                          helsinki_path: Path) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'maps.sqlite3'}"
    engine = make_engine(url)
    migrations.upgrade(engine)
    MapRepository(engine).import_map(helsinki_path)  # the stored data to keep intact
    before_maps, before_counts = _maps(engine), _stored_counts(engine)
    original = helsinki_path.read_bytes()
    files = []
    for seed in SEEDS:
        path = tmp_path / f"damaged-{seed}.osm.pbf"
        path.write_bytes(corrupt(original, seed))
        files.append(str(path))
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, url, *files], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    outcomes = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["file"] for o in outcomes] == files
    for o in outcomes:  # zlib checksums and PBF framing catch every one of these seeds
        assert o["outcome"] == "refused", o
        assert o["message"].startswith("cannot read OSM data from damaged-"), o
    assert _maps(engine) == before_maps and _stored_counts(engine) == before_counts
    engine.dispose()


def test_the_cli_refuses_a_damaged_pbf_with_exit_2_and_one_line(tmp_path: Path, helsinki_path: Path) -> None:
    damaged = tmp_path / "damaged.osm.pbf"
    data = bytearray(helsinki_path.read_bytes())
    data[40:240] = bytes(200)  # the first block's header and start of its data zeroed
    damaged.write_bytes(bytes(data))
    env = {**os.environ, "ROUTING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    cli = [sys.executable, "-m", "routing_api.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.run([*cli, "import-map", str(damaged)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: cannot read OSM data from damaged.osm.pbf"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    listed = subprocess.run([*cli, "maps", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "damaged" not in listed.stdout


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_is_deterministic_and_damages(seed: int) -> None:
    data = bytes(range(256)) * 40
    assert corrupt(data, seed) == corrupt(data, seed) != data
