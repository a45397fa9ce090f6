"""Schemathesis over the app's own OpenAPI schema, in process: generated requests, valid and
invalid, against ``create_app(container=...)`` on a temporary SQLite database with the Helsinki
map, the in-process queue and the real model, with a dispatcher token. No answer may be a
server error (5xx) or break the response schema it declares.

The requests go through the one ``TestClient`` that ran the app's lifespan (the in-process
queue lives on that client's event loop). CI-sized: a few examples per operation and mode.
``POST /v1/admin/model`` is left out: each valid call loads and warms a model (slow, and it
would change the model under the other operations).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from routing_api.app import create_app
from routing_api.bootstrap import bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers

MAX_SEARCH_MS = 20.0  # generated time budgets go up to 10 s; a few ms exercise the same code
# Per operation and generation mode; more for a deeper hunt: ROUTING_SCHEMA_EXAMPLES=200 pytest ...
EXAMPLES = int(os.environ.get("ROUTING_SCHEMA_EXAMPLES", "10"))
SKIPPED = {("POST", "/v1/admin/model")}


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation of the schema (read from an app built, not started):
    valid inputs for each; invalid ones for each that takes any input."""
    spec = create_app(Settings(database_url="sqlite:///:memory:")).openapi()
    out = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if (method.upper(), path) in SKIPPED:
                continue
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return sorted(out, key=lambda c: (c[1], c[0], c[2].value))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[tuple[TestClient, Any]]:
    tmp = tmp_path_factory.mktemp("schema")
    config = Settings(database_url=f"sqlite:///{tmp / 'db.sqlite3'}", redis_url=None, amqp_url=None,
                      model_dir=str(tmp / "models"), max_wait_ms=1.0, request_timeout_s=5.0)  # fmt: skip
    c = bootstrap(config, migrate=True)
    c.maps.import_map(helsinki_path)
    app = create_app(container=c)
    with TestClient(app, headers=dispatcher_headers(c)) as client:  # runs the lifespan
        yield client, schemathesis.openapi.from_dict(app.openapi())
    c.close()


def _request_kwargs(case: Any) -> dict[str, Any]:
    """``case`` as arguments of the TestClient (httpx): a JSON body as ``json``, any other as ``content``."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("options"), dict):
        budget = body["options"].get("time_budget_ms")
        if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > MAX_SEARCH_MS:
            kw["json"]["options"]["time_budget_ms"] = MAX_SEARCH_MS
    out = {k: kw[k] for k in ("method", "url", "headers", "params", "cookies") if kw.get(k)}
    out["headers"] = {k: v for k, v in (kw.get("headers") or {}).items() if k.lower() != "authorization"}
    if "json" in kw:
        out["json"] = kw["json"]
    elif kw.get("data") is not None:
        data = kw["data"]
        out["content"] = data if isinstance(data, bytes | str) else str(data)
    return out


@pytest.mark.parametrize(("method", "path", "mode"), _cases(), ids=lambda v: getattr(v, "value", v))
def test_no_server_error_and_responses_match_their_schema(served: tuple[TestClient, Any], method: str, path: str,
                                                          mode: GenerationMode) -> None:  # fmt: skip
    client, schema = served
    operation = schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 10, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = client.request(**_request_kwargs(case))
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    try:
        check()
    except Unsatisfiable:
        # Every value its parameters could take is valid (e.g. a free-form path string).
        pytest.skip(f"no invalid request can be made for {method} {path}")
