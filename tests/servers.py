"""Waiting for a `routing serve` subprocess that a test started."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest


def wait_until_ready(base: str, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:  # type: ignore[type-arg]
    """Poll ``base``/readyz until it answers 200; fail the test (with the log's tail) if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"service did not become ready; log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
