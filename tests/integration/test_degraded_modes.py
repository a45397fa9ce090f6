"""Degraded modes of one API process (monolith: SQLite, in-process queue, the real ONNX model):
the model failing, oversized bodies, readiness and database-error answers.

The services-mode faults (servers cut, a worker killed) are in ``test_faults.py``; the
request-log buffer against a real PostgreSQL that goes away is in ``test_request_log_buffer.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[tuple[TestClient, Container]]:
    tmp = tmp_path_factory.mktemp("degraded")
    settings = Settings(database_url=f"sqlite:///{tmp / 'db.sqlite3'}", redis_url=None, amqp_url=None,
                        model_dir=str(tmp / "models"), model_backend="onnxruntime", max_wait_ms=2.0,
                        max_body_bytes=64 * 1024)  # fmt: skip
    c = bootstrap(settings, migrate=True)
    c.maps.import_map(helsinki_path)
    with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as client:
        yield client, c
    c.close()


def _body(seed: int, n_stops: int = 8) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pts = np.column_stack((rng.uniform(60.1650, 60.1780, n_stops + 1), rng.uniform(24.9370, 24.9520, n_stops + 1)))
    return {"driver_id": f"deg-{seed}", "start": {"lat": pts[0, 0], "lon": pts[0, 1]},
            "stops": [{"id": f"s{k}", "lat": pts[k, 0], "lon": pts[k, 1]} for k in range(1, n_stops + 1)]}  # fmt: skip


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _session_with_other_inputs() -> Any:
    """A real ONNX Runtime session of a one-node model whose only input is ``y``: feeding it the
    edge scorer's inputs (``x``, ``edge_index``, ``edge_attr``) makes ``run`` raise."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["y"], ["z"])], "other",
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_a_failing_model_falls_back_to_the_plain_search_marked_and_uncached(app_client) -> None:
    client, c = app_client
    backend = c.model.backend
    assert backend is not None and backend.name == "onnxruntime"
    body = _body(1)
    healthy = client.post("/v1/routes", json=_body(2)).json()
    assert healthy["degraded"] is False and healthy["guided"] is True
    fallbacks = _metric(client, "routing_model_fallbacks_total")
    good_session = backend.session  # type: ignore[attr-defined]
    backend.session = _session_with_other_inputs()  # type: ignore[attr-defined]
    try:
        first = client.post("/v1/routes", json=body)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["degraded"] is True and answer["guided"] is False
        assert answer["served_by"]["backend"] == "fallback:knn" and answer["versions"]["backend"] == "fallback:knn"
        assert sorted(answer["order"]) == sorted(s["id"] for s in body["stops"])
        assert _metric(client, "routing_model_fallbacks_total") == fallbacks + 1
        again = client.post("/v1/routes", json=body).json()
        assert again["cache"] == "miss" and again["degraded"] is True  # a degraded answer is not cached
    finally:
        backend.session = good_session  # type: ignore[attr-defined]
    recovered = client.post("/v1/routes", json=body).json()
    assert recovered["degraded"] is False and recovered["guided"] is True and recovered["cache"] == "miss"
    assert client.post("/v1/routes", json=body).json()["cache"] == "hit"
    assert c.solver is not None and c.solver.stats().fallbacks >= 2


def test_an_oversized_body_is_refused_with_413_naming_the_limit(app_client) -> None:
    client, _ = app_client
    body = _body(3)
    body["stops"] = [dict(body["stops"][0], id=f"x{i}") for i in range(2000)]  # ~170 KB > 64 KiB
    r = client.post("/v1/routes", json=body)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"][0]
    assert detail["kind"] == "body_too_large" and detail["loc"] == ["body"] and "65536" in detail["msg"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"driver_id": "d", "stops": ['
        for _ in range(2000):
            yield b'{"id": "a", "lat": 60.17, "lon": 24.94},'
        yield b"]}"

    streamed = client.post("/v1/routes", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["detail"][0]["kind"] == "body_too_large"
    assert 'routing_errors_total{kind="body_too_large"} 2.0' in client.get("/metrics").text
    assert client.post("/v1/routes", json=_body(4)).status_code == 200  # a normal body still passes


def test_readyz_is_ready_when_everything_answers(app_client) -> None:
    client, c = app_client
    c.request_log.flush()  # rows of the tests before may still be on their way (written off the request path)
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["degraded"] == []
    assert body["checks"]["persistence"] == {"state": "ok", "buffered": 0, "dropped": 0}


@pytest.mark.parametrize(
    ("path_kind", "mutate", "loc_part"),
    [
        (
            "position",
            lambda b: b.update(timestamp="0001-01-01T00:00:00+01:00"),
            "timestamp",
        ),  # no UTC value (was a 500)
        ("route", lambda b: b.update(depart_at="9999-12-31T23:59:59Z"), "depart_at"),
        (
            "route",
            lambda b: b["stops"][0].update(
                window={"earliest": "1500-01-01T00:00:00Z", "latest": "2026-11-30T09:00:00Z"}
            ),
            "window",
        ),
    ],
)
def test_times_outside_the_supported_range_are_422(app_client, path_kind, mutate, loc_part) -> None:
    client, _ = app_client
    if path_kind == "position":
        body: dict[str, Any] = {"lat": 60.17, "lon": 24.94, "timestamp": "2026-11-30T08:00:00Z"}
        mutate(body)
        r = client.post("/v1/drivers/van-t/positions", json=body)
    else:
        body = _body(5)
        mutate(body)
        r = client.post("/v1/routes", json=body)
    assert r.status_code == 422, r.text
    assert loc_part in str(r.json()["detail"]) and "between 1970" in str(r.json()["detail"])


def test_naive_and_offset_times_mix_in_one_request(app_client) -> None:
    client, _ = app_client
    body = _body(6, n_stops=3)
    body["depart_at"] = "2026-11-30T08:00:00"  # naive: UTC
    body["stops"][0]["window"] = {"earliest": "2026-11-30T10:00:00+02:00", "latest": "2026-11-30T09:30:00"}
    r = client.post("/v1/routes", json=body)
    assert r.status_code == 200, r.text  # 08:00 UTC .. 09:30 UTC: a real window, not a type error
