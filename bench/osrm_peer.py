"""OSRM as a side-by-side peer for the benchmarks, on the same OSM map, run locally.

OSRM comes from the PyPI wheel `osrm-bindings` (cp312 build), installed into the bench-only venv `.venv-osrm` by
`make osrm-venv`. This module runs in the main venv (Python 3.11): it never imports `osrm`, it only runs the wheel's
binaries (osrm-extract, osrm-contract / osrm-partition + osrm-customize, osrm-routed) with the wheel's car profile
and talks HTTP to osrm-routed with httpx.

    from osrm_peer import OsrmPeer, osrm_available
    if (why := osrm_available()) is not None:
        print(f"SKIP OSRM peer: {why}")
    else:
        with OsrmPeer(Path("../shared/data/road_networks/manhattan_midtown.osm.pbf")) as osrm:
            osrm.route([(40.7580, -73.9855), (40.7484, -73.9857)])  # {"duration_s": ..., "distance_m": ...}

Smoke check: `python bench/osrm_peer.py --map ../shared/data/road_networks/manhattan_midtown.osm.pbf`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import math
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OSRM_BINDINGS_VERSION = "26.10.0"  # keep in step with the Makefile's osrm-venv target
OSRM_VENV = REPO / ".venv-osrm"
OSRM_STAMP = OSRM_VENV / f".osrm-bindings-{OSRM_BINDINGS_VERSION}"
CACHE_ROOT = REPO / "var" / "osrm"
BASE_NAME = "map.osrm"  # files in the cache folder: map.osrm.*
ALGORITHMS = ("ch", "mld")
STEP_OUTPUT = {"extract": ".ebg", "ch": ".hsgr", "mld": ".mldgr"}  # a file each step must have left


class OsrmError(RuntimeError):
    """OSRM could not be prepared, started or queried; the message says why."""


# --- where things are ------------------------------------------------------------------------------------------


def python312() -> Path | None:
    """The interpreter `make osrm-venv` would use: $OSRM_PYTHON, else pyenv's newest versions/3.12*."""
    if env := os.environ.get("OSRM_PYTHON"):
        return Path(env) if Path(env).is_file() else None
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10, check=True).stdout
        roots.append(Path(out.strip()))
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        found = sorted((root / "versions").glob("3.12*/bin/python"), key=lambda p: p.parts[-3])
        if found:
            return found[-1]
    return None


def osrm_package_dir() -> Path | None:
    """The installed `osrm` package folder in .venv-osrm (holds bin/ and share/profiles/), or None."""
    for site in sorted(OSRM_VENV.glob("lib/python3*/site-packages")):
        if (site / "osrm" / "bin").is_dir():
            return site / "osrm"
    return None


def osrm_bin(name: str) -> Path:
    """Path of one wheel binary, e.g. osrm_bin("osrm-routed")."""
    pkg = osrm_package_dir()
    if pkg is None:
        raise OsrmError(f"{OSRM_VENV} has no osrm package: run `make osrm-venv`")
    return pkg / "bin" / name


def car_profile() -> Path:
    """The wheel's car.lua (its lib/ folder lies beside it, where the profile's require() finds it)."""
    pkg = osrm_package_dir()
    if pkg is None:
        raise OsrmError(f"{OSRM_VENV} has no osrm package: run `make osrm-venv`")
    return pkg / "share" / "profiles" / "car.lua"


def osrm_available() -> str | None:
    """None when the OSRM peer can run, else the reason it can't (for a bench's skip line)."""
    if not OSRM_STAMP.is_file():
        if python312() is None:
            return "no Python 3.12 (pyenv versions/3.12* or $OSRM_PYTHON) for the osrm-bindings cp312 wheel"
        if OSRM_VENV.exists():
            return f"{OSRM_VENV.name} lacks osrm-bindings=={OSRM_BINDINGS_VERSION}: run `make osrm-venv`"
        return f"{OSRM_VENV.name} missing: run `make osrm-venv`"
    try:
        needed = [osrm_bin(n) for n in ("osrm-extract", "osrm-contract", "osrm-partition", "osrm-customize")]
        needed += [osrm_bin("osrm-routed"), car_profile()]
    except OsrmError as e:
        return str(e)
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        return f"missing from the osrm-bindings wheel: {', '.join(missing)}"
    return None


def ensure_venv() -> None:
    """Run `make osrm-venv` when the venv is missing; raise OsrmError if OSRM still can't run."""
    if not OSRM_STAMP.is_file():
        if python312() is None:
            raise OsrmError(osrm_available() or "no Python 3.12")
        proc = subprocess.run(["make", "-C", str(REPO), "osrm-venv"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise OsrmError(f"`make osrm-venv` failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    if (why := osrm_available()) is not None:
        raise OsrmError(why)


def osrm_version() -> str:
    """The version osrm-routed reports, e.g. 'v26.10.0'."""
    out = subprocess.run([str(osrm_bin("osrm-routed")), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.strip() or out.stderr.strip()).splitlines()[-1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sha16(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _lonlat(coords: Sequence[tuple[float, float]]) -> str:
    return ";".join(f"{lon:.6f},{lat:.6f}" for lat, lon in coords)


# --- the peer ---------------------------------------------------------------------------------------------------


class OsrmPeer:
    """osrm-routed on a free local port, on OSRM files prepared (and cached) from one .osm.pbf with the car profile.

    Coordinates are (lat, lon) everywhere in this API; durations are seconds, distances metres. OSRM snaps each
    point to the nearest road with no radius limit, so a point off the map still routes (from the map's edge).
    """

    def __init__(
        self,
        pbf_path: Path,
        algorithm: str = "ch",
        *,
        threads: int | None = None,
        cache_root: Path = CACHE_ROOT,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if algorithm.lower() not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")
        self.pbf_path = Path(pbf_path).resolve()
        self.algorithm = algorithm.lower()
        self.threads = threads or os.cpu_count() or 2
        self.cache_root = Path(cache_root)
        self.startup_timeout_s = startup_timeout_s
        self.cache_dir: Path | None = None
        self.port: int | None = None
        self.base_url = ""
        self.version = ""
        self.prepare_s = 0.0  # seconds spent in extract/contract this time (0 when the cache was reused)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._client: httpx.Client | None = None

    # context manager ------------------------------------------------------------------------------------------

    def __enter__(self) -> OsrmPeer:
        try:
            ensure_venv()
            self.version = osrm_version()
            self.prepare()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # preparation ---------------------------------------------------------------------------------------------

    @property
    def base_path(self) -> Path:
        if self.cache_dir is None:
            raise OsrmError("not prepared yet")
        return self.cache_dir / BASE_NAME

    def prepare(self) -> Path:
        """Extract (car profile), then contract (CH) or partition+customize (MLD) into var/osrm/<sha16>/<algorithm>/.

        Done once per map, algorithm and OSRM version (stamp files); later calls reuse the files.
        """
        if not self.pbf_path.is_file():
            raise OsrmError(f"map not found: {self.pbf_path}")
        # one folder per algorithm: osrm-partition renumbers the extract's graph (and drops a CH's .hsgr)
        self.cache_dir = self.cache_root / _sha16(self.pbf_path) / self.algorithm
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        version = self.version or osrm_version()
        t0 = time.perf_counter()
        did = False
        with (self.cache_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two benches preparing the same map wait for each other
            steps: list[tuple[str, list[list[str]]]] = [
                ("extract", [[str(osrm_bin("osrm-extract")), "-p", str(car_profile()), "-t", str(self.threads),
                              "-o", str(self.base_path), str(self.pbf_path)]]),
            ]  # fmt: skip
            if self.algorithm == "ch":
                steps.append(("ch", [[str(osrm_bin("osrm-contract")), "-t", str(self.threads), str(self.base_path)]]))
            else:
                steps.append(("mld", [[str(osrm_bin("osrm-partition")), "-t", str(self.threads), str(self.base_path)],
                                      [str(osrm_bin("osrm-customize")), "-t", str(self.threads), str(self.base_path)]]))  # fmt: skip
            for name, commands in steps:
                stamp = self.cache_dir / f".{name}.done"
                output = self.cache_dir / (BASE_NAME + STEP_OUTPUT[name])
                if not did and stamp.is_file() and stamp.read_text().strip() == version and output.is_file():
                    continue  # an earlier step redone means every later one is redone too
                stamp.unlink(missing_ok=True)
                for cmd in commands:
                    self._run_step(cmd, self.cache_dir / f"{name}.log")
                stamp.write_text(version + "\n")
                did = True
        self.prepare_s = time.perf_counter() - t0 if did else 0.0
        return self.base_path

    @staticmethod
    def _run_step(cmd: list[str], log_path: Path) -> None:
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise OsrmError(f"{Path(cmd[0]).name} failed ({proc.returncode}); log {log_path}:\n{tail}")

    # server --------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        assert self.cache_dir is not None
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        log_path = self.cache_dir / "routed.log"
        self._log = log_path.open("ab")
        self._log.write(f"--- osrm-routed on port {self.port}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._log.flush()
        cmd = [str(osrm_bin("osrm-routed")), "--algorithm", self.algorithm.upper(), "--ip", "127.0.0.1",
               "--port", str(self.port), "--threads", str(self.threads), "--max-table-size", "10000",
               "--max-viaroute-size", "10000", str(self.base_path)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(600.0, connect=5.0),
                                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise OsrmError(f"osrm-routed exited ({self._proc.returncode}) at start; log {log_path}:\n{tail}")
            try:
                self._client.get("/nearest/v1/driving/0,0", timeout=2.0)  # any HTTP answer means it serves
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise OsrmError(f"osrm-routed did not answer within {self.startup_timeout_s:.0f}s; log {log_path}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop osrm-routed (its whole process group); safe to call twice."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    # queries -------------------------------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        if self._client is None:
            raise OsrmError("OsrmPeer is not running (use it as a context manager)")
        # osrm-routed closes idle keep-alive connections: a request on one that just closed is sent again.
        for attempt in range(3):
            try:
                resp = self._client.get(path, params=params)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                if attempt == 2:
                    raise
        try:
            body: dict[str, Any] = resp.json()
        except ValueError as e:
            raise OsrmError(f"OSRM {path[:80]}: HTTP {resp.status_code}, not JSON: {resp.text[:300]}") from e
        return body

    def route(self, coords: Sequence[tuple[float, float]]) -> dict[str, float]:
        """Fastest car route through (lat, lon) points in order: {"duration_s", "distance_m"}; NaN on NoRoute."""
        if len(coords) < 2:
            raise ValueError("route needs at least two points")
        body = self._get(f"/route/v1/driving/{_lonlat(coords)}", {"overview": "false", "steps": "false"})
        code = body.get("code")
        if code == "NoRoute":
            return {"duration_s": math.nan, "distance_m": math.nan}
        if code != "Ok":
            raise OsrmError(f"OSRM route: {code}: {body.get('message', '')}")
        best = body["routes"][0]
        return {"duration_s": float(best["duration"]), "distance_m": float(best["distance"])}

    def route_many(
        self, pairs: Sequence[tuple[float, float, float, float]], concurrency: int = 4
    ) -> tuple[np.ndarray, np.ndarray]:
        """One route per (lat1, lon1, lat2, lon2), `concurrency` requests at a time: (durations_s, distances_m)."""

        def one(p: tuple[float, float, float, float]) -> tuple[float, float]:
            r = self.route([(p[0], p[1]), (p[2], p[3])])
            return r["duration_s"], r["distance_m"]

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            out = list(pool.map(one, pairs))
        arr = np.array(out, dtype=np.float64).reshape(len(out), 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def table(self, coords: Sequence[tuple[float, float]]) -> np.ndarray:
        """All-pairs car durations in seconds between (lat, lon) points, shape (n, n); NaN where unreachable."""
        if not coords:
            return np.zeros((0, 0))
        body = self._get(f"/table/v1/driving/{_lonlat(coords)}", {"annotations": "duration"})
        if body.get("code") != "Ok":
            raise OsrmError(f"OSRM table: {body.get('code')}: {body.get('message', '')}")
        return np.array(
            [[math.nan if v is None else float(v) for v in row] for row in body["durations"]], dtype=np.float64
        )

    def road_coords(self) -> np.ndarray:
        """(lat, lon) of every node of OSRM's car road graph for this map, shape (n, 2): points to sample from."""
        with tarfile.open(self.base_path.with_name(BASE_NAME + ".nbg_nodes")) as tar:
            member = tar.extractfile("/common/nbn_data/coordinates")
            if member is None:
                raise OsrmError("nbg_nodes has no coordinates")
            fixed = np.frombuffer(member.read(), dtype="<i4").reshape(-1, 2)  # (lon, lat) * 1e6
        return fixed[:, ::-1].astype(np.float64) / 1e6


# --- smoke check ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    print(f"{label}: {(time.perf_counter() - t0) * 1000:.1f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--map", type=Path, required=True, help=".osm.pbf to route on")
    ap.add_argument("--algorithm", choices=ALGORITHMS, default="ch")
    ap.add_argument("--route", default=None, help="lat,lon;lat,lon (default: two road nodes of the map)")
    ap.add_argument("--table-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        ensure_venv()  # runs `make osrm-venv` when the venv is missing
    except OsrmError as e:
        print(f"SKIP OSRM peer: {e}")
        return 0
    with OsrmPeer(args.map, args.algorithm) as osrm:
        print(f"OSRM {osrm.version} (osrm-bindings {OSRM_BINDINGS_VERSION}), {osrm.algorithm.upper()}, "
              f"{osrm.base_url}, cache {osrm.cache_dir}"
              + (f", prepared in {osrm.prepare_s:.1f} s" if osrm.prepare_s else ", cache reused"))  # fmt: skip
        rng = np.random.default_rng(args.seed)
        nodes = osrm.road_coords()
        if args.route:
            pts = [tuple(float(x) for x in p.split(",")) for p in args.route.split(";")]
            route_pts = [(p[0], p[1]) for p in pts]
        else:
            a, b = rng.choice(len(nodes), size=2, replace=False)
            route_pts = [(float(nodes[a][0]), float(nodes[a][1])), (float(nodes[b][0]), float(nodes[b][1]))]
        osrm.route(route_pts)  # warm
        with _timed(f"route {route_pts}"):
            r = osrm.route(route_pts)
        print(f"  duration {r['duration_s']:.1f} s, distance {r['distance_m']:.0f} m")
        n = min(args.table_size, len(nodes))
        pts_t = [(float(lat), float(lon)) for lat, lon in nodes[rng.choice(len(nodes), size=n, replace=False)]]
        osrm.table(pts_t[:2])  # warm
        with _timed(f"table {n}x{n}"):
            t = osrm.table(pts_t)
        print(f"  finite {np.isfinite(t).mean() * 100:.1f}%, median {np.nanmedian(t):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
