"""Access control: every rule has a test where the wrong token fails, and one where the right one passes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from graph_store.models import ApiToken
from routing_api.app import create_app
from routing_api.auth import AuthStoreUnavailable, RateLimiter, TokenStore
from routing_api.bootstrap import Container, bootstrap
from routing_api.cli import main
from routing_api.settings import Settings
from tests.auth_helpers import bearer

CENTRE = (24.9410, 60.1700)


def _body(driver_id: str, n: int = 3) -> dict[str, Any]:
    lon, lat = CENTRE
    return {
        "driver_id": driver_id,
        "start": {"lat": lat, "lon": lon},
        "stops": [{"id": f"s{i}", "lat": lat + 0.002 * (i + 1), "lon": lon + 0.003 * ((-1) ** i)} for i in range(n)],
    }


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[tuple[TestClient, Container]]:
    tmp = tmp_path_factory.mktemp("auth")
    settings = Settings(database_url=f"sqlite:///{tmp / 'db.sqlite3'}", model_dir=str(tmp / "models"), max_wait_ms=1.0)
    c = bootstrap(settings, migrate=True)
    c.maps.import_map(helsinki_path)
    with TestClient(create_app(container=c)) as client:
        yield client, c
    c.close()


@pytest.fixture(scope="module")
def tokens(app: tuple[TestClient, Container]) -> dict[str, str]:
    _, c = app
    return {
        "dispatcher": c.tokens.create("dispatcher", name="ops", rate_per_s=0),
        "alice": c.tokens.create("driver", "alice", rate_per_s=0),
        "bob": c.tokens.create("driver", "bob", rate_per_s=0),
    }


def test_tokens_are_stored_hashed(app: tuple[TestClient, Container], tokens: dict[str, str]) -> None:
    _, c = app
    with c.tokens.sessions() as s:
        rows = s.scalars(select(ApiToken)).all()
    stored = {r.token_hash for r in rows}
    for token in tokens.values():
        assert token not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert all(len(r.prefix) == 10 for r in rows)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/routes"),
        ("get", "/v1/drivers"),
        ("get", "/route/v1/driving/24.941,60.170;24.945,60.172"),
        ("get", "/table/v1/driving/24.941,60.170;24.945,60.172"),
        ("get", "/nearest/v1/driving/24.941,60.170"),
        ("get", "/trip/v1/driving/24.941,60.170;24.945,60.172;24.943,60.168"),
        ("post", "/v1/admin/cache/flush"),
        ("post", "/v1/admin/model"),
        ("post", "/v1/drivers/alice/positions"),
        ("get", "/v1/routes/whatever"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer rt_not-a-real-token-at-all", "Basic dXNlcjpwYXNz", "Bearer "])
def test_missing_or_bad_token_is_401(app: tuple[TestClient, Container], method: str, path: str,
                                     header: str | None) -> None:  # fmt: skip
    client, _ = app
    headers = {"Authorization": header} if header is not None else {}
    r = client.request(method.upper(), path, headers=headers, json=_body("alice"))
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["detail"][0]["kind"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/drivers"),
        ("get", "/route/v1/driving/24.941,60.170;24.945,60.172"),
        ("get", "/table/v1/driving/24.941,60.170;24.945,60.172"),
        ("get", "/nearest/v1/driving/24.941,60.170"),
        ("post", "/v1/admin/cache/flush"),
        ("post", "/v1/admin/model"),
    ],
)
def test_driver_token_cannot_use_dispatcher_endpoints(app: tuple[TestClient, Container], tokens: dict[str, str],
                                                       method: str, path: str) -> None:  # fmt: skip
    client, _ = app
    r = client.request(method.upper(), path, headers=bearer(tokens["alice"]), json={})
    assert r.status_code == 403, r.text
    assert r.json()["detail"][0]["kind"] == "forbidden"


def test_dispatcher_token_opens_dispatcher_endpoints(app: tuple[TestClient, Container], tokens: dict[str, str]) -> None:
    client, _ = app
    h = bearer(tokens["dispatcher"])
    assert client.get("/v1/drivers", headers=h).status_code == 200
    assert client.get("/route/v1/driving/24.941,60.170;24.945,60.172", headers=h).status_code == 200
    assert client.post("/v1/admin/cache/flush", headers=h).status_code == 200


def test_driver_plans_and_reads_only_its_own_routes(app: tuple[TestClient, Container], tokens: dict[str, str]) -> None:
    client, _ = app
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    r = client.post("/v1/routes", json=_body("alice"), headers=alice)
    assert r.status_code == 200, r.text
    route_id = r.json()["route_id"]
    # for another driver id: refused, naming the field
    r = client.post("/v1/routes", json=_body("bob"), headers=alice)
    assert r.status_code == 403
    assert r.json()["detail"][0]["loc"] == ["body", "driver_id"]
    # reading: own route yes; another driver's route looks like it does not exist
    assert client.get(f"/v1/routes/{route_id}", headers=alice).status_code == 200
    assert client.get(f"/v1/routes/{route_id}", headers=bob).status_code == 404
    # a dispatcher reads and plans for anyone
    assert client.get(f"/v1/routes/{route_id}", headers=bearer(tokens["dispatcher"])).status_code == 200
    assert client.post("/v1/routes", json=_body("carol"), headers=bearer(tokens["dispatcher"])).status_code == 200


def test_driver_posts_pings_only_for_itself(app: tuple[TestClient, Container], tokens: dict[str, str]) -> None:
    client, _ = app
    ping = {"lat": 60.17, "lon": 24.94, "timestamp": "2026-11-28T10:00:00Z"}
    assert client.post("/v1/drivers/alice/positions", json=ping, headers=bearer(tokens["alice"])).status_code == 202
    r = client.post("/v1/drivers/bob/positions", json=ping, headers=bearer(tokens["alice"]))
    assert r.status_code == 403
    assert r.json()["detail"][0]["loc"] == ["path", "driver_id"]
    assert client.post("/v1/drivers/bob/positions", json=ping, headers=bearer(tokens["dispatcher"])).status_code == 202


def test_revoked_token_is_refused(app: tuple[TestClient, Container]) -> None:
    client, c = app
    token = c.tokens.create("dispatcher", rate_per_s=0)
    assert client.get("/v1/drivers", headers=bearer(token)).status_code == 200
    assert c.tokens.revoke(token[:10]) == 1
    assert client.get("/v1/drivers", headers=bearer(token)).status_code == 401
    assert c.tokens.revoke(token[:10]) == 0  # already revoked


def test_health_stays_open_metrics_configurable(app: tuple[TestClient, Container], tokens: dict[str, str]) -> None:
    client, c = app
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # open either way: never 401
    assert client.get("/metrics").status_code == 200
    c.settings.metrics_public = False
    try:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(tokens["alice"])).status_code == 403
        assert client.get("/metrics", headers=bearer(tokens["dispatcher"])).status_code == 200
    finally:
        c.settings.metrics_public = True


def test_rate_limit_answers_429_with_retry_after(app: tuple[TestClient, Container]) -> None:
    client, c = app
    token = c.tokens.create("dispatcher", rate_per_s=0.5)  # burst = 3 s of rate -> 1.5 -> 1 request
    statuses = [client.get("/v1/drivers", headers=bearer(token)).status_code for _ in range(4)]
    assert statuses[0] == 200
    assert 429 in statuses
    r = client.get("/v1/drivers", headers=bearer(token))
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["detail"][0]["kind"] == "rate_limited"
    # another token is not affected
    other = c.tokens.create("dispatcher", rate_per_s=0.5)
    assert client.get("/v1/drivers", headers=bearer(other)).status_code == 200


def test_rate_limiter_refills() -> None:
    now = [0.0]
    rl = RateLimiter(clock=lambda: now[0])
    assert [rl.take("k", 2.0, 2.0)[0] for _ in range(3)] == [True, True, False]
    ok, wait = rl.take("k", 2.0, 2.0)
    assert not ok and wait == pytest.approx(0.5)
    now[0] += 0.5
    assert rl.take("k", 2.0, 2.0)[0]
    assert rl.take("k", 0.0, 1.0) == (True, 0.0)  # 0 = unlimited


def test_auth_off_needs_no_token(tmp_path: Path, helsinki_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", model_dir=str(tmp_path / "m"), auth="off")
    c = bootstrap(settings, migrate=True)
    try:
        with TestClient(create_app(container=c)) as client:
            assert client.get("/v1/drivers").status_code == 200
    finally:
        c.close()


def test_token_store_serves_last_known_good_when_database_fails(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    c = bootstrap(settings, migrate=True)
    try:
        now = [0.0]
        store = TokenStore(c.engine, clock=lambda: now[0])
        known = store.create("driver", "alice")
        unknown = "rt_" + "x" * 43
        assert store.verify(known) is not None
        with c.engine.begin() as conn:
            conn.execute(text("ALTER TABLE api_tokens RENAME TO api_tokens_gone"))
        now[0] += TokenStore.FRESH_S + 1
        p = store.verify(known)
        assert p is not None and p.driver_id == "alice"
        with pytest.raises(AuthStoreUnavailable):
            store.verify(unknown)
        now[0] += TokenStore.STALE_S
        with pytest.raises(AuthStoreUnavailable):
            store.verify(known)
    finally:
        c.close()


def test_token_store_refuses_bad_arguments(app: tuple[TestClient, Container]) -> None:
    _, c = app
    for args in [("admin",), ("driver",), ("driver", ""), ("dispatcher", "alice"), ("driver", "x" * 129)]:
        with pytest.raises(ValueError):
            c.tokens.create(*args)
    with pytest.raises(ValueError):
        c.tokens.create("driver", "alice", rate_per_s=-1)


def test_cli_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("ROUTING_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert main(["tokens", "list"]) == 2
    assert "routing db upgrade" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["tokens", "create", "--role", "driver", "--driver-id", "d7"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("rt_") and len(token) > 40
    assert main(["tokens", "create", "--role", "driver"]) == 2
    assert "driver id" in capsys.readouterr().err
    assert main(["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    assert token[:10] in listing and token not in listing and "d7" in listing
    assert main(["tokens", "revoke", token]) == 0
    assert main(["tokens", "revoke", token]) == 2
    assert "no active token" in capsys.readouterr().err
    # the local instance's dispatcher token: created once, then the same one
    file = tmp_path / "dispatcher.token"
    assert main(["tokens", "ensure-dispatcher", "--file", str(file)]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["tokens", "ensure-dispatcher", "--file", str(file)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == first
    assert file.read_text().strip() == first
    assert oct(file.stat().st_mode & 0o777) == "0o600"
