"""Error responses: every non-2xx answer is one JSON body with a status, a code and a message."""

from __future__ import annotations

import io
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from werkzeug.test import TestResponse

from app import create_app
from app.jobs.registry import registry
from tests.conftest import enqueue


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check the response is the one JSON error body with this status and code; return it."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def queued_job_count(app: Flask, redis: fakeredis.FakeRedis) -> int:
    """Return how many jobs wait on all the app's queues."""
    return sum(Queue(name, connection=redis).count for name in app.config["QUEUES"])


# --- job ids ---


@pytest.mark.parametrize("route", ["/check_status", "/get_result"])
@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "missing_job_id"),
        ("?job_id=", 400, "missing_job_id"),
        ("?job_id=../../etc/passwd", 400, "invalid_job_id"),
        ("?job_id=a%20b", 400, "invalid_job_id"),
        ("?job_id=" + "a" * 129, 400, "invalid_job_id"),
        ("?job_id=no-such-job", 404, "job_not_found"),
    ],
    ids=["missing", "empty", "path", "space", "too-long", "unknown"],
)
def test_bad_job_id_is_refused(client: FlaskClient, route: str, query: str, status: int, code: str) -> None:
    assert_error(client.get(route + query), status, code)


def test_unknown_job_error_names_the_job(client: FlaskClient) -> None:
    error = assert_error(client.get("/check_status?job_id=no-such-job"), 404, "job_not_found")

    assert error["job_id"] == "no-such-job"


# --- /enqueue bodies that are read but not valid ---


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({"function": "nope"}, "unknown_function", "'nope'"),
        ({"function": 5}, "invalid_function", "string"),
        ({"function": "resize_image"}, "invalid_arguments", "missing a required argument: 'image'"),
        (
            {"function": "count", "kwargs": {"speed": 2}},
            "invalid_arguments",
            "unexpected keyword argument 'speed'",
        ),
        (
            {"function": "count", "args": [1, "short", 3]},
            "invalid_arguments",
            "too many positional arguments",
        ),
        (
            {"function": "count", "kwargs": {"duration": "x"}},
            "invalid_arguments",
            "argument 'duration' must be number, not string",
        ),
        ({"function": "count", "args": {"duration": 1}}, "invalid_arguments", "args must be a JSON array"),
        ({"function": "count", "kwargs": [1]}, "invalid_arguments", "kwargs must be a JSON object"),
        ({"function": "count", "priority": 1}, "unknown_fields", "priority"),
        ({"function": "count", "queue": "urgent"}, "invalid_queue", "high, default, low"),
        ({"function": "count", "timeout": 0}, "invalid_timeout", "timeout"),
        ({"function": "count", "timeout": 3601}, "invalid_timeout", "timeout"),
        ({"function": "count", "timeout": True}, "invalid_timeout", "timeout"),
        ({"function": "count", "timeout": "60"}, "invalid_timeout", "timeout"),
        ({"function": "count", "result_ttl": -1}, "invalid_result_ttl", "result_ttl"),
        ({"function": "count", "result_ttl": 7 * 86400 + 1}, "invalid_result_ttl", "result_ttl"),
    ],
    ids=[
        "unknown-function",
        "function-not-a-string",
        "missing-required-arg",
        "unexpected-kwarg",
        "too-many-args",
        "wrong-type",
        "args-not-array",
        "kwargs-not-object",
        "unknown-body-field",
        "bad-queue",
        "timeout-zero",
        "timeout-over-max",
        "timeout-bool",
        "timeout-string",
        "result-ttl-negative",
        "result-ttl-over-max",
    ],
)
def test_invalid_enqueue_body_is_refused_with_422_and_nothing_is_queued(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, body: dict[str, Any], code: str, says: str
) -> None:
    error = assert_error(client.post("/enqueue", json=body), 422, code)

    assert says in error["message"]
    assert queued_job_count(app, redis) == 0


def test_unknown_function_error_lists_the_available_functions(client: FlaskClient) -> None:
    error = assert_error(client.post("/enqueue", json={"function": "nope"}), 422, "unknown_function")

    assert error["available"] == registry.names()
    assert error["available"] == [
        "count",
        "noop",
        "render_report",
        "resize_image",
        "send_email",
        "some_long_function",
    ]


def test_arguments_error_describes_the_function(client: FlaskClient) -> None:
    error = assert_error(
        client.post("/enqueue", json={"function": "count", "kwargs": {"speed": 2}}), 422, "invalid_arguments"
    )

    assert error["function"]["name"] == "count"
    assert [p["name"] for p in error["function"]["parameters"]] == ["duration", "length"]


def test_unknown_body_field_error_lists_the_allowed_fields(client: FlaskClient) -> None:
    error = assert_error(
        client.post("/enqueue", json={"function": "count", "priority": 1}), 422, "unknown_fields"
    )

    assert error["allowed"] == [
        "allow_failure",
        "args",
        "at",
        "delay",
        "depends_on",
        "failure_ttl",
        "function",
        "job_id",
        "kwargs",
        "queue",
        "result_ttl",
        "retry",
        "timeout",
        "ttl",
    ]


def test_bad_queue_error_lists_the_queues(client: FlaskClient) -> None:
    error = assert_error(
        client.post("/enqueue", json={"function": "count", "queue": "x"}), 422, "invalid_queue"
    )

    assert error["queues"] == ["high", "default", "low"]


# --- /enqueue bodies that cannot be read ---


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("hello", "text/plain", 415, "unsupported_media_type"),
        ("function=count", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"function": "count",', "application/json", 400, "invalid_json"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_json"),
        ("", "application/json", 400, "empty_body"),
        ("  \n", "application/json", 400, "empty_body"),
    ],
    ids=["text-plain", "urlencoded", "invalid-json", "not-utf8", "empty", "whitespace"],
)
def test_unreadable_enqueue_body_is_refused(
    app: Flask,
    client: FlaskClient,
    redis: fakeredis.FakeRedis,
    data: str | bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    response = client.post("/enqueue", data=data, content_type=content_type)

    assert_error(response, status, code)
    assert queued_job_count(app, redis) == 0


@pytest.mark.parametrize("config", [{"MAX_CONTENT_LENGTH": 64}])
@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {"hello": "x" * 200}},
        {
            "data": {"function": "resize_image", "image": (io.BytesIO(b"\x89PNG" + b"\0" * 200), "a.png")},
            "content_type": "multipart/form-data",
        },
    ],
    ids=["json", "multipart"],
)
def test_body_over_max_content_length_is_refused_with_413(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, request_kwargs: dict[str, Any]
) -> None:
    response = client.post("/enqueue", **request_kwargs)

    assert_error(response, 413, "request_entity_too_large")
    assert queued_job_count(app, redis) == 0


# --- routing ---


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/enqueue", "POST"),
        ("GET", "/enqueue", "POST"),
        ("POST", "/check_status", "GET"),
        ("DELETE", "/get_result", "GET"),
    ],
)
def test_wrong_method_is_refused_with_405_and_an_allow_header(
    client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    response = client.open(path, method=method)

    assert_error(response, 405, "method_not_allowed")
    allow = {part.strip() for part in response.headers["Allow"].split(",")}
    assert allowed in allow
    assert method not in allow


@pytest.mark.parametrize("path", ["/nope", "/enqueue/extra", "/functions.json"])
def test_unknown_route_is_404_json(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


# --- server-side failures ---


@pytest.fixture
def unreachable_client() -> FlaskClient:
    """Return a client of an app whose Redis cannot be reached."""
    app = create_app(
        {"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": 0.2}
    )
    return app.test_client()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/enqueue", {"hello": "world"}),
        ("GET", "/check_status?job_id=abc", None),
        ("GET", "/get_result?job_id=abc", None),
    ],
    ids=["enqueue", "check_status", "get_result"],
)
def test_unreachable_redis_answers_503_with_retry_after(
    unreachable_client: FlaskClient, method: str, path: str, body: Any
) -> None:
    response = unreachable_client.open(path, method=method, json=body)

    assert_error(response, 503, "redis_unavailable")
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize("config", [{"PROPAGATE_EXCEPTIONS": False}])
def test_unexpected_exception_answers_500_without_internals(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = enqueue(client, {"hello": "world"})

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr("app.api.describe_job", explode)

    response = client.get(f"/check_status?job_id={job_id}")

    assert_error(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert "secret detail" not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
