"""The OpenAPI description at /openapi.json and the docs page at /docs: complete, valid, true."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.exceptions import HTTPException
from werkzeug.test import TestResponse

from app.auth import required_scope
from app.jobs.registry import registry
from app.listing import PARAMETERS
from app.openapi import EXAMPLE_PNG, PARAMETER_KINDS, describe_api, openapi_path
from app.submissions import BODY_KEYS, FORM_FIELDS
from app.worker import SimpleWorker

METHODS = {"get", "post", "put", "patch", "delete"}
# Not part of the API: Flask's static files (the docs page's assets) and rq-dashboard at /rq.
UNDOCUMENTED_BLUEPRINTS = {"static", "rq_dashboard"}
DOCS_ASSETS = Path(__file__).resolve().parents[1] / "app" / "static" / "docs"


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    """Return the description the app serves."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.get_json()
    return document


def routes(app: Flask) -> set[tuple[str, str]]:
    """Return the app's (path, method) pairs, leaving out static files, /rq, HEAD and OPTIONS."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] not in UNDOCUMENTED_BLUEPRINTS
        for method in rule.methods or ()
        if method.lower() in METHODS
    }


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Return the described (path, method) pairs."""
    return {(path, method) for path, item in spec["paths"].items() for method in item if method in METHODS}


def pointer(*parts: str) -> str:
    """Return the JSON pointer to a place in the description."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def validator(spec: dict[str, Any], *parts: str) -> Draft202012Validator:
    """Return a JSON Schema validator of the schema at this place in the description."""
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    schemas = Registry().with_resource("urn:openapi", resource)
    return Draft202012Validator(
        {"$ref": "urn:openapi#" + pointer(*parts)},
        registry=schemas,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def check(spec: dict[str, Any], response: TestResponse, path: str, method: str = "get") -> TestResponse:
    """Assert that the response is one the description documents, body and headers."""
    status = str(response.status_code)
    operation = spec["paths"].get(path, {}).get(method)
    if operation is None:
        # No such route or method: the app-wide error answer.
        assert response.status_code in (404, 405), response.get_data(as_text=True)
        where: tuple[str, ...] = ("components", "responses", "Error")
    elif status in operation["responses"]:
        where = ("paths", path, method, "responses", status)
    else:
        assert response.status_code >= 400, f"{method.upper()} {path} does not document {status}"
        where = ("paths", path, method, "responses", "default")
    documented = spec
    for part in where:
        documented = documented[part]
    if "$ref" in documented:
        where = tuple(documented["$ref"].removeprefix("#/").split("/"))
        documented = spec[where[0]][where[1]][where[2]]
    content = documented.get("content", {})
    media = response.mimetype if response.mimetype in content else "*/*"
    assert media in content, f"{method.upper()} {path} {status}: {response.mimetype} is not documented"
    for header, definition in documented.get("headers", {}).items():
        if "$ref" in definition:
            definition = spec["components"]["headers"][definition["$ref"].rpartition("/")[2]]
        if definition.get("required"):
            assert header in response.headers, f"{method.upper()} {path} {status}: no {header} header"
    if media == "application/json":
        errors = [
            f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator(spec, *where, "content", media, "schema").iter_errors(response.get_json())
        ]
        assert not errors, f"{method.upper()} {path} {status}: {errors}\n{response.get_json()}"
    return response


# The description itself ------------------------------------------------------------------------


def test_the_description_is_a_valid_openapi_document(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": "http://localhost"}]


def test_every_route_is_described_with_exactly_its_methods(app: Flask, spec: dict[str, Any]) -> None:
    served, described = routes(app), operations(spec)
    assert not served - described, f"routes missing from the description: {sorted(served - described)}"
    assert not described - served, f"described but not served: {sorted(described - served)}"


def test_every_operation_is_tagged_and_answers_errors_with_the_error_body(spec: dict[str, Any]) -> None:
    for path, method in operations(spec):
        operation = spec["paths"][path][method]
        assert operation["tags"] and operation["operationId"], (path, method)
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Error"}


def test_the_enqueue_body_lists_every_registered_function(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    choices = [choice.get("$ref") for choice in schemas["EnqueueJob"]["oneOf"]]
    assert choices == [f"#/components/schemas/{name}.enqueue" for name in registry.names()]
    assert schemas["EnqueueForm"]["properties"]["function"]["enum"] == registry.names()
    for function in registry:
        parameters = {parameter["name"] for parameter in function.describe()["parameters"]}
        assert schemas[f"{function.name}.enqueue"]["properties"]["function"] == {"const": function.name}
        assert set(schemas[f"{function.name}.kwargs"]["properties"]) == parameters


def test_the_enqueue_options_are_the_fields_the_server_reads(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    options = set(schemas["EnqueueOptions"]["properties"])
    assert options | {"function", "args", "kwargs"} == BODY_KEYS
    assert set(FORM_FIELDS) <= set(schemas["EnqueueForm"]["properties"])


def test_the_parameter_kinds_are_inspect_s() -> None:
    assert [kind.name.lower() for kind in inspect.Parameter.POSITIONAL_ONLY.__class__] == PARAMETER_KINDS


def test_the_listing_parameters_are_the_ones_the_server_reads(spec: dict[str, Any]) -> None:
    for path in ("/jobs", "/events"):
        names = [parameter["name"] for parameter in spec["paths"][path]["get"]["parameters"]]
        assert names == list(PARAMETERS), path


def test_parameter_types_become_json_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    count = schemas["count.kwargs"]["properties"]
    assert count["duration"] == {"type": "number", "default": 5.0}
    assert count["length"] == {"type": ["string", "null"], "default": None}
    assert schemas["resize_image.kwargs"]["properties"]["image"] == {
        "$ref": "#/components/schemas/FileArgument"
    }
    assert schemas["send_email.kwargs"]["properties"]["to"] == {"type": ["array", "string"]}
    assert schemas["some_long_function.kwargs"]["properties"]["some_input"] == {}
    assert schemas["send_email.enqueue"]["then"]["properties"]["kwargs"]["required"] == [
        "to",
        "subject",
        "body",
    ]


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"function": "count", "kwargs": {"duration": 1}, "queue": "high", "timeout": 60}, True),
        ({"function": "send_email", "args": ["a@example.com", "Hi", "Hello"]}, True),
        ({"function": "count", "retry": {"max": 5, "backoff": "exponential", "base": 2}}, True),
        ({"hello": "world"}, True),
        ([1, 2, 3], True),
        ([{"hello": "world"}], True),
        ([{"hello": "world"}, {"function": "count"}], False),
        ([{"function": "count"}, {"function": "noop", "delay": 60}], True),
        ({"function": "nope"}, False),
        ([], False),
        ([{"function": "count"}, {"function": "nope"}], False),
        ([{"function": "noop", "args": [1]}], False),
        ({"function": "count", "kwargs": {"duration": "long"}}, False),
        ({"function": "count", "kwargs": {"nope": 1}}, False),
        ({"function": "count", "bogus": 1}, False),
        ({"function": "count", "queue": "urgent"}, False),
        ({"function": "send_email", "kwargs": {"to": "a@example.com"}}, False),
        ({"function": "count", "retry": {"max": 0}}, False),
    ],
)
def test_the_request_schema_tells_good_bodies_from_bad(
    client: FlaskClient, spec: dict[str, Any], body: Any, valid: bool
) -> None:
    schema = validator(spec, "components", "schemas", "EnqueueRequest")
    assert schema.is_valid(body) == valid
    # The server agrees.
    assert (client.post("/enqueue", json=body).status_code == 202) == valid


def test_every_example_body_is_accepted(client: FlaskClient, spec: dict[str, Any]) -> None:
    media = spec["paths"]["/enqueue"]["post"]["requestBody"]["content"]["application/json"]
    schema = validator(spec, "components", "schemas", "EnqueueRequest")
    assert set(media["examples"]) == {*registry.names(), "batch", "seed format"}
    for name, example in media["examples"].items():
        assert schema.is_valid(example["value"]), name
        check(spec, client.post("/enqueue", json=example["value"]), "/enqueue", "post")


# Real responses against the description ----------------------------------------------------------

Call = Callable[..., TestResponse]


@pytest.fixture
def call(app: Flask, client: FlaskClient, spec: dict[str, Any]) -> Call:
    """Return a function that sends a request and checks the answer against the description."""
    adapter = app.url_map.bind("localhost")

    def send(method: str, url: str, **options: Any) -> TestResponse:
        response = client.open(url, method=method.upper(), **options)
        path = urlsplit(url).path
        try:
            rule, _ = adapter.match(path, method=method.upper(), return_rule=True)
        except HTTPException:
            template = path  # no such route or method: answered with the error body
        else:
            template = openapi_path(rule.rule)
        return check(spec, response, template, method.lower())

    return send


def test_responses_of_a_job_s_life_match_the_description(
    app: Flask, redis: fakeredis.FakeRedis, call: Call, work: Callable[[], None]
) -> None:
    for url in ("/", "/functions", "/docs", "/health", "/metrics", "/queues", "/workers"):
        assert call("get", url).status_code == 200, url
    assert call("get", "/", headers={"Accept": "text/html"}).mimetype == "text/html"
    assert call("get", "/ready").status_code == 503  # no worker yet
    SimpleWorker(app.config["QUEUES"], connection=redis, app=app).register_birth()
    assert call("get", "/ready").status_code == 200
    call("get", "/workers")

    job_id = call("post", "/enqueue", json={"function": "count", "kwargs": {"duration": 0}}).get_json()[
        "job_id"
    ]
    assert call("get", f"/check_status?job_id={job_id}").get_json()["status"] == "queued"
    assert call("get", f"/get_result?job_id={job_id}&wait=0.1").status_code == 202
    call("get", "/jobs?status=queued")
    call("get", "/queues")
    work()
    assert call("get", f"/jobs/{job_id}").get_json()["status"] == "finished"
    assert call("get", f"/check_status?job_id={job_id}&wait=1").get_json()["status"] == "finished"
    assert call("get", f"/get_result?job_id={job_id}").status_code == 200
    events = call("get", f"/jobs/{job_id}/events").get_data(as_text=True)
    assert "event: job" in events and "event: end" in events
    call("get", "/jobs?function=count")
    call("get", "/metrics")
    assert call("post", f"/jobs/{job_id}/cancel").status_code == 409
    assert call("post", f"/jobs/{job_id}/requeue").status_code == 409
    assert call("delete", f"/jobs/{job_id}").status_code == 200
    assert call("get", f"/jobs/{job_id}").status_code == 404


def test_responses_of_waiting_failed_and_file_jobs_match_the_description(
    call: Call, work: Callable[[], None]
) -> None:
    later = call("post", "/enqueue", json={"function": "count", "delay": 600}).get_json()
    assert later["status"] == "scheduled"
    call("get", f"/check_status?job_id={later['job_id']}")
    child = call("post", "/enqueue", json={"function": "count", "depends_on": [later["job_id"]]}).get_json()
    assert child["status"] == "deferred"
    call("get", f"/check_status?job_id={child['job_id']}")
    assert call("post", f"/jobs/{later['job_id']}/cancel").get_json()["status"] == "canceled"
    assert call("post", f"/jobs/{later['job_id']}/requeue").status_code == 202

    failing = call("post", "/enqueue", json={"function": "count", "kwargs": {"duration": -1}}).get_json()
    image = {"function": "resize_image", "kwargs": {"image": {"$file": {"base64": EXAMPLE_PNG}}}}
    picture = call("post", "/enqueue", json=image).get_json()
    call("post", "/enqueue", data={"function": "count", "duration": "0"}, content_type="multipart/form-data")
    work()
    assert call("get", f"/check_status?job_id={failing['job_id']}").get_json()["error"]
    assert call("get", f"/get_result?job_id={failing['job_id']}").status_code == 409
    call("get", "/jobs?status=failed,finished,canceled")
    assert call("get", f"/get_result?job_id={picture['job_id']}").mimetype == "image/png"


def test_a_batch_and_its_errors_match_the_description(call: Call) -> None:
    batch = [{"function": "count"}, {"function": "noop", "delay": 60}, {"function": "noop", "job_id": "mine"}]
    jobs = call("post", "/enqueue", json=batch).get_json()["jobs"]
    assert [job["status"] for job in jobs] == ["queued", "scheduled", "queued"]
    replay = call("post", "/enqueue", json=[{"function": "noop", "job_id": "mine"}]).get_json()["jobs"]
    assert replay[0]["replayed"] is True
    assert call("post", "/enqueue", json=[{"function": "noop"}, {"function": "nope"}]).status_code == 422
    assert call("post", "/enqueue", json=[]).status_code == 422
    assert call("post", "/enqueue", json=[{"function": "noop"}] * 1001).status_code == 413


def test_an_idempotent_replay_matches_the_description(call: Call) -> None:
    headers = {"Idempotency-Key": "7d3c1f0e-6a52-4c1b-9a3e-2f4b8e1d0c55"}
    first = call("post", "/enqueue", json={"function": "count"}, headers=headers)
    replay = call("post", "/enqueue", json={"function": "count"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["job_id"] == first.get_json()["job_id"]
    conflict = call("post", "/enqueue", json={"function": "count", "queue": "low"}, headers=headers)
    assert conflict.status_code == 409


@pytest.mark.parametrize(
    ("method", "url", "options", "status"),
    [
        ("post", "/enqueue", {"json": {"function": "nope"}}, 422),
        ("post", "/enqueue", {"json": {"function": "count", "bogus": 1}}, 422),
        ("post", "/enqueue", {"json": {"function": "count", "kwargs": {"duration": "x"}}}, 422),
        ("post", "/enqueue", {"data": "{", "content_type": "application/json"}, 400),
        ("post", "/enqueue", {"data": "", "content_type": "application/json"}, 400),
        ("post", "/enqueue", {"data": "hello", "content_type": "text/plain"}, 415),
        ("post", "/enqueue", {"json": {"function": "count"}, "headers": {"Idempotency-Key": "é"}}, 400),
        ("get", "/check_status", {}, 400),
        ("get", "/check_status?job_id=bad!id", {}, 400),
        ("get", "/check_status?job_id=nope", {}, 404),
        ("get", "/check_status?job_id=nope&wait=soon", {}, 400),
        ("get", "/get_result?job_id=nope", {}, 404),
        ("get", "/get_result?job_id=nope&wait=9999", {}, 422),
        ("get", "/jobs?status=bogus", {}, 422),
        ("get", "/jobs?per_page=many", {}, 400),
        ("get", "/jobs?page=0", {}, 422),
        ("get", "/jobs?colour=red", {}, 422),
        ("get", "/events?status=bogus", {}, 422),
        ("get", "/jobs/nope", {}, 404),
        ("get", "/jobs/nope/events", {}, 404),
        ("post", "/jobs/nope/cancel", {}, 404),
        ("post", "/jobs/nope/requeue", {}, 404),
        ("delete", "/jobs/nope", {}, 404),
        ("get", "/enqueue", {}, 405),
        ("delete", "/check_status", {}, 405),
        ("get", "/nowhere", {}, 404),
    ],
)
def test_error_responses_match_the_description(
    call: Call, method: str, url: str, options: dict[str, Any], status: int
) -> None:
    response = call(method, url, **options)
    assert response.status_code == status
    if status == 405:
        assert response.headers["Allow"]


KEY = "reader-key-0123456789"


@pytest.mark.parametrize(
    "config", [{"API_KEYS": json.dumps([{"name": "reader", "key": KEY, "scopes": ["read"]}])}]
)
def test_the_description_says_which_key_each_route_needs(
    app: Flask, spec: dict[str, Any], call: Call
) -> None:
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in UNDOCUMENTED_BLUEPRINTS:
            continue
        for method in {method for method in rule.methods or () if method.lower() in METHODS}:
            operation = spec["paths"][openapi_path(rule.rule)][method.lower()]
            scope = required_scope(rule.endpoint, method)
            assert operation.get("x-scope") == scope, (rule.rule, method)
            assert (operation["security"] == []) == (scope is None), (rule.rule, method)
    assert call("get", "/jobs").status_code == 401
    assert call("get", "/jobs", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert call("get", "/jobs", headers={"X-API-Key": KEY}).status_code == 200
    assert call("post", "/enqueue", json={"function": "count"}, headers={"X-API-Key": KEY}).status_code == 403
    assert call("get", "/health").status_code == 200


# The docs page -------------------------------------------------------------------------------------


class Assets(HTMLParser):
    """Collect the URLs a page loads: scripts, stylesheets, images, its description."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the URL attributes of a tag."""
        for name, value in attrs:
            if value and name in {"src", "href", "data-spec-url"}:
                self.urls.append(value)


def test_the_docs_page_loads_only_assets_this_server_serves(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    parser = Assets()
    parser.feed(page.get_data(as_text=True))
    assert len(parser.urls) == 4, parser.urls  # stylesheet, two scripts, the description
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content_length or asset.get_data(), url
    assert "/openapi.json" in parser.urls


def test_the_swagger_ui_copy_keeps_its_license_beside_it() -> None:
    assert "Apache License" in (DOCS_ASSETS / "LICENSE").read_text()
    assert "SmartBear" in (DOCS_ASSETS / "NOTICE").read_text()
    assert "swagger-ui-dist" in (DOCS_ASSETS / "README.md").read_text()


def test_the_description_is_built_without_a_request(app: Flask) -> None:
    document = describe_api(app)
    assert "servers" not in document
    assert set(document["paths"]) == {path for path, _ in routes(app)}
