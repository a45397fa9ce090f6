"""Starting `routing serve` as a subprocess for a test, and waiting until it is ready."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest


def wait_until_ready(base: str, procs: subprocess.Popen | Sequence[subprocess.Popen], timeout_s: float,  # type: ignore[type-arg]
                     log_path: Path) -> None:  # fmt: skip
    """Poll ``base``/readyz until it answers 200; fail the test (with the tail of ``log_path``) if one of
    ``procs`` exits or time runs out."""
    watched = [procs] if isinstance(procs, subprocess.Popen) else list(procs)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        exited = [p.args for p in watched if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            pytest.fail(f"service did not become ready (exited: {exited}); log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


@contextlib.contextmanager
def routing_serve(command: list[str], base: str, env: dict[str, str], log_path: Path, timeout_s: float,
                  cwd: Path | None = None) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]  # fmt: skip
    """Run ``command`` (a `routing serve ...` command line) with its output in ``log_path``, wait until
    ``base`` is ready, and stop it (SIGTERM, then SIGKILL) when the block ends."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(base, proc, timeout_s, log_path)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
