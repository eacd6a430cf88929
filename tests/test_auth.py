"""API keys, scopes, own-jobs keys, rate limits, the cross-origin guard and result caps."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from app import create_app
from app.auth import parse_keys, parse_rate_limit

READER = "reader-key-0123456789"
SUBMITTER = "submitter-key-0123456789"
CANCELLER = "canceller-key-0123456789"
ADMIN = "admin-key-0123456789abc"
ALICE = "alice-key-0123456789abc"
BOB = "bob-key-0123456789abcdef"
HASHED = "hashed-key-0123456789abc"

KEYS = [
    {"name": "reader", "key": READER, "scopes": ["read"]},
    {"name": "submitter", "key": SUBMITTER, "scopes": ["submit"]},
    {"name": "canceller", "key": CANCELLER, "scopes": ["read", "cancel"]},
    {"name": "admin", "key": ADMIN, "scopes": ["admin"]},
    {"name": "alice", "key": ALICE, "scopes": ["read", "submit"], "own_jobs_only": True},
    {"name": "bob", "key": BOB, "scopes": ["read", "submit"], "own_jobs_only": True},
    {"name": "hashed", "sha256": hashlib.sha256(HASHED.encode()).hexdigest(), "scopes": ["read"]},
]


@pytest.fixture
def config() -> dict[str, Any]:
    """Return the app's config with API keys set."""
    return {"API_KEYS": json.dumps(KEYS)}


def auth(key: str) -> dict[str, str]:
    """Return the header that presents a key."""
    return {"X-API-Key": key}


def enqueue_as(client: FlaskClient, key: str, body: Any | None = None) -> str:
    """Enqueue with a key and return the job id."""
    response = client.post(
        "/enqueue", json=body or {"function": "count", "kwargs": {"duration": 0}}, headers=auth(key)
    )
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/functions"),
        ("POST", "/enqueue"),
        ("GET", "/check_status?job_id=abc"),
        ("GET", "/get_result?job_id=abc"),
        ("GET", "/jobs"),
        ("GET", "/queues"),
        ("GET", "/workers"),
        ("POST", "/jobs/abc/cancel"),
        ("DELETE", "/jobs/abc"),
    ],
)
def test_routes_without_a_key_answer_401_with_a_bearer_challenge(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method, json={"function": "count"})

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_wrong_key_is_refused(client: FlaskClient) -> None:
    response = client.get("/functions", headers=auth("not-a-key-of-this-server"))

    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "The API key is not valid."


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": READER},
        {"Authorization": f"Bearer {READER}"},
        {"Authorization": "Basic " + base64.b64encode(f"anyone:{READER}".encode()).decode()},
        {"X-API-Key": HASHED},
    ],
    ids=["x-api-key", "bearer", "basic-password", "sha256-configured"],
)
def test_a_key_is_accepted_in_every_documented_form(client: FlaskClient, headers: dict[str, str]) -> None:
    assert client.get("/functions", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/"])
def test_public_routes_need_no_key(client: FlaskClient, path: str) -> None:
    assert client.get(path, headers={"Accept": "application/json"}).status_code == 200


@pytest.mark.parametrize(
    ("key", "method", "path", "scope"),
    [
        (READER, "POST", "/enqueue", "submit"),
        (SUBMITTER, "GET", "/functions", "read"),
        (READER, "POST", "/jobs/abc/cancel", "cancel"),
        (READER, "POST", "/jobs/abc/requeue", "cancel"),
        (READER, "DELETE", "/jobs/abc", "cancel"),
        (CANCELLER, "GET", "/rq/", "admin"),
    ],
)
def test_a_key_without_the_scope_answers_403_naming_it(
    client: FlaskClient, key: str, method: str, path: str, scope: str
) -> None:
    response = client.open(path, method=method, json={"function": "count"}, headers=auth(key))

    assert response.status_code == 403
    assert response.get_json()["error"]["scope"] == scope


def test_each_scope_does_its_part(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue_as(client, SUBMITTER)
    work()

    assert client.get(f"/get_result?job_id={job_id}", headers=auth(READER)).status_code == 200
    assert client.delete(f"/jobs/{job_id}", headers=auth(CANCELLER)).status_code == 200


def test_admin_may_do_everything(client: FlaskClient) -> None:
    job_id = enqueue_as(client, ADMIN)

    assert client.get(f"/check_status?job_id={job_id}", headers=auth(ADMIN)).status_code == 200
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth(ADMIN)).status_code == 200
    assert client.get("/rq/", headers=auth(ADMIN)).status_code == 200


def test_the_dashboard_asks_browsers_for_a_password(client: FlaskClient) -> None:
    response = client.get("/rq/")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="rq-job-server"'
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    assert client.get("/rq/", headers={"Authorization": basic}).status_code == 200


def test_a_key_for_its_own_jobs_sees_only_those(client: FlaskClient) -> None:
    alices = enqueue_as(client, ALICE)
    bobs = enqueue_as(client, BOB)

    assert client.get(f"/check_status?job_id={alices}", headers=auth(ALICE)).status_code == 200
    foreign = client.get(f"/check_status?job_id={bobs}", headers=auth(ALICE))
    assert foreign.status_code == 404
    assert foreign.get_json()["error"]["code"] == "job_not_found"
    assert client.get(f"/get_result?job_id={bobs}", headers=auth(ALICE)).status_code == 404
    listed = client.get("/jobs", headers=auth(ALICE)).get_json()
    assert [job["job_id"] for job in listed["jobs"]] == [alices]


def test_a_key_for_all_jobs_sees_every_owner(client: FlaskClient) -> None:
    enqueue_as(client, ALICE)
    enqueue_as(client, BOB)

    assert client.get("/jobs", headers=auth(READER)).get_json()["total"] == 2


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"name": "x"}, "must be a JSON list"),
        ([{"key": "0123456789abcdef", "scopes": ["read"]}], "must be an object with a name"),
        ([{"name": "x", "key": "short", "scopes": ["read"]}], "16 or more characters"),
        ([{"name": "x", "key": "0123456789abcdef", "scopes": []}], "scopes must be a non-empty list"),
        ([{"name": "x", "key": "0123456789abcdef", "scopes": ["root"]}], "scopes must be a non-empty list"),
        (
            [
                {"name": "x", "key": "0123456789abcdef", "scopes": ["read"]},
                {"name": "x", "key": "fedcba9876543210", "scopes": ["read"]},
            ],
            "a name of its own",
        ),
    ],
)
def test_bad_api_keys_config_is_refused_at_start_up(entries: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keys(json.dumps(entries))


@pytest.mark.parametrize("raw", ["120", "a/60", "0/60", "10/0", "1/2/3"])
def test_bad_rate_limit_config_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT"):
        parse_rate_limit(raw)


@pytest.mark.parametrize("config", [{"API_KEYS": json.dumps(KEYS), "RATE_LIMIT": "3/60"}])
def test_a_key_over_its_rate_answers_429_with_retry_after(client: FlaskClient) -> None:
    answers = [client.get("/functions", headers=auth(READER)).status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]
    limited = client.get("/functions", headers=auth(READER))
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Each key has its own budget.
    assert client.get("/functions", headers=auth(ADMIN)).status_code == 200


@pytest.mark.parametrize("config", [{"RATE_LIMIT": "2/60"}])
def test_open_mode_limits_each_client_address(client: FlaskClient) -> None:
    answers = [client.get("/functions").status_code for _ in range(3)]

    assert answers == [200, 200, 429]
    assert client.get("/functions", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


@pytest.mark.parametrize("config", [{}])
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_writes_from_other_sites_are_refused(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/enqueue", json={"hello": "world"}, headers=headers)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "cross_origin"


@pytest.mark.parametrize("config", [{"ALLOWED_ORIGINS": ("https://tools.example",)}])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://localhost"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://tools.example"},
    ],
    ids=["api-client", "same-origin", "fetch-metadata", "allowed-origin"],
)
def test_writes_from_the_page_api_clients_and_allowed_origins_pass(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    assert client.post("/enqueue", json={"hello": "world"}, headers=headers).status_code == 202


@pytest.mark.parametrize("config", [{"MAX_RESULT_BYTES": 1000}])
def test_a_result_over_the_cap_fails_the_job_instead_of_filling_redis(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    small = enqueue_as(client, "", {"function": "some_long_function", "args": ["x" * 10]})
    huge = enqueue_as(client, "", {"function": "some_long_function", "args": ["x" * 2000]})
    work()

    assert client.get(f"/get_result?job_id={small}").status_code == 200
    status = client.get(f"/check_status?job_id={huge}").get_json()
    assert status["status"] == "failed"
    assert "ResultTooLarge" in status["error"]
    assert "MAX_RESULT_BYTES (1000)" in status["error"]


@pytest.mark.parametrize(("host", "level"), [("0.0.0.0", logging.CRITICAL), ("127.0.0.1", logging.WARNING)])
def test_open_mode_is_announced_loudly_when_bound_beyond_localhost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str, level: int
) -> None:
    monkeypatch.setenv("HOST", host)
    monkeypatch.delenv("API_KEYS", raising=False)
    with caplog.at_level(logging.WARNING, logger="app.auth"):
        create_app({"APP_ENV": "production", "API_KEYS": "[]"}, connection=fakeredis.FakeRedis())

    records = [record for record in caplog.records if record.name == "app.auth"]
    assert [record.levelno for record in records] == [level]
    assert "open mode" in records[0].getMessage().lower()


def test_with_keys_the_page_asks_the_browser_to_log_in(client: FlaskClient) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml"}
    response = client.get("/", headers=browser)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="rq-job-server"'
    basic = "Basic " + base64.b64encode(f"me:{READER}".encode()).decode()
    page = client.get("/", headers={**browser, "Authorization": basic})
    assert page.status_code == 200
    assert page.mimetype == "text/html"


def test_the_json_index_stays_public_with_keys(client: FlaskClient) -> None:
    assert client.get("/", headers={"Accept": "application/json"}).status_code == 200


def test_the_page_login_also_opens_its_event_streams(client: FlaskClient) -> None:
    job_id = enqueue_as(client, SUBMITTER)
    basic = "Basic " + base64.b64encode(f"me:{READER}".encode()).decode()

    assert client.get(f"/jobs/{job_id}/events").status_code == 401
    stream = client.get(f"/jobs/{job_id}/events", headers={"Authorization": basic}, buffered=False)
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    stream.close()
