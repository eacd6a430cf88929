"""The HTTP API over the Flask test client: enqueue, follow and fetch jobs on FakeRedis."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from rq import Queue
from rq.job import Job
from werkzeug.test import TestResponse

from app import __version__
from app.jobs.registry import registry
from app.queue import SERIALIZER
from tests.conftest import enqueue

MULTIPART = "multipart/form-data"
FUNCTIONS = ["count", "noop", "render_report", "resize_image", "send_email", "some_long_function"]


def png(size: tuple[int, int], color: str = "red") -> bytes:
    """Return a small solid-colour PNG."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def fetch(redis: fakeredis.FakeRedis, job_id: str) -> Job:
    """Return the job as RQ stored it."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def post_form(client: FlaskClient, fields: dict[str, Any]) -> TestResponse:
    """Post a multipart/form-data body to /enqueue."""
    return client.post("/enqueue", data=fields, content_type=MULTIPART)


def upload_image(
    client: FlaskClient, image: bytes, filename: str = "photo.png", **fields: str
) -> TestResponse:
    """Post an image to resize_image as a multipart upload."""
    return post_form(
        client,
        {"function": "resize_image", **fields, "image": (io.BytesIO(image), filename, "image/png")},
    )


def result_of(client: FlaskClient, job_id: str) -> Any:
    """Return the JSON result of a finished job."""
    response = client.get(f"/get_result?job_id={job_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["result"]


def queued_job_count(app: Flask, redis: fakeredis.FakeRedis) -> int:
    """Return how many jobs wait on all the app's queues."""
    return sum(Queue(name, connection=redis).count for name in app.config["QUEUES"])


# --- / and /functions ---


def test_index_names_the_service_and_version(client: FlaskClient) -> None:
    body = client.get("/").get_json()

    assert body["service"] == "rq-job-server"
    assert body["version"] == __version__


def test_index_links_to_every_route(client: FlaskClient) -> None:
    links = client.get("/").get_json()["links"]

    assert links == {
        "enqueue": "http://localhost/enqueue",
        "check_status": "http://localhost/check_status?job_id={job_id}",
        "get_result": "http://localhost/get_result?job_id={job_id}",
        "functions": "http://localhost/functions",
        "jobs": "http://localhost/jobs",
        "queues": "http://localhost/queues",
        "workers": "http://localhost/workers",
        "dashboard": "http://localhost/rq",
    }


@pytest.mark.parametrize("name", ["functions", "jobs", "queues", "workers"])
def test_index_links_lead_to_routes_that_answer(client: FlaskClient, name: str) -> None:
    link = client.get("/").get_json()["links"][name]

    assert client.get(link).status_code == 200


def test_index_status_link_template_leads_to_the_job(client: FlaskClient) -> None:
    job_id = enqueue(client, {"hello": "world"})
    template = client.get("/").get_json()["links"]["check_status"]

    response = client.get(template.format(job_id=job_id))

    assert response.status_code == 200
    assert response.get_json()["job_id"] == job_id


def test_functions_lists_every_registered_function(client: FlaskClient) -> None:
    functions = client.get("/functions").get_json()["functions"]

    assert [function["name"] for function in functions] == FUNCTIONS


def test_functions_gives_each_a_one_line_doc(client: FlaskClient) -> None:
    functions = client.get("/functions").get_json()["functions"]

    for function in functions:
        assert function["doc"], function["name"]
        assert "\n" not in function["doc"]
    docs = {function["name"]: function["doc"] for function in functions}
    assert (
        docs["some_long_function"] == "Echo the input back with the job's timing, after ECHO_DELAY_SECONDS."
    )


def test_functions_describes_parameters_with_types_and_defaults(client: FlaskClient) -> None:
    functions = {f["name"]: f for f in client.get("/functions").get_json()["functions"]}

    # The registry tests pin the description itself; the route must serve exactly that.
    assert functions["count"] == registry.get("count").describe()
    image, width, height, crop = functions["resize_image"]["parameters"]
    assert image == {"name": "image", "kind": "positional_or_keyword", "type": "file", "required": True}
    assert (width["type"], width["default"]) == ("integer", 256)
    assert (height["type"], height["default"]) == ("integer", 256)
    assert (crop["type"], crop["default"]) == ("array or null", None)
    send_email = {p["name"]: p for p in functions["send_email"]["parameters"]}
    assert [name for name, p in send_email.items() if p["required"]] == ["to", "subject", "body"]
    assert send_email["to"]["type"] == "array or string"


# --- POST /enqueue ---


def test_enqueue_answers_202_with_the_job_id_and_its_links(client: FlaskClient) -> None:
    response = client.post("/enqueue", json={"hello": "world"})

    assert response.status_code == 202
    body = response.get_json()
    job_id = body["job_id"]
    assert job_id
    assert body["status"] == "queued"
    assert body["status_url"] == f"http://localhost/check_status?job_id={job_id}"
    assert body["result_url"] == f"http://localhost/get_result?job_id={job_id}"
    assert response.headers["Location"] == body["status_url"]


def test_seed_body_goes_whole_to_some_long_function_and_is_echoed(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    body = {"hello": "world", "nested": {"n": [1, 2]}}
    response = client.post("/enqueue", json=body)
    assert response.get_json()["function"] == "some_long_function"
    job_id = response.get_json()["job_id"]

    work()

    result = result_of(client, job_id)
    assert result["input"] == body
    assert result["result"] == body
    assert result["job_id"] == job_id


@pytest.mark.parametrize(
    "body",
    [
        {"function": "count", "args": [0]},
        {"function": "count", "kwargs": {"duration": 0}},
    ],
    ids=["args", "kwargs"],
)
def test_enqueue_runs_the_named_function_with_the_given_arguments(
    client: FlaskClient, work: Callable[[], None], body: dict[str, Any]
) -> None:
    job_id = enqueue(client, body)

    work()

    result = result_of(client, job_id)
    assert result["counted"] == 1
    assert result["duration"] == 0


def test_enqueue_puts_the_job_on_the_chosen_queue_with_its_timeout_and_result_ttl(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    body = {
        "function": "count",
        "kwargs": {"duration": 0},
        "queue": "high",
        "timeout": 30,
        "result_ttl": 120,
    }
    response = client.post("/enqueue", json=body)

    assert response.status_code == 202
    assert response.get_json()["queue"] == "high"
    job_id = response.get_json()["job_id"]
    job = fetch(redis, job_id)
    assert job.origin == "high"
    assert job.timeout == 30
    assert job.result_ttl == 120
    assert Queue("high", connection=redis).job_ids == [job_id]
    assert Queue("default", connection=redis).count == 0


def test_enqueue_without_choices_uses_the_default_queue_and_configured_limits(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job = fetch(redis, enqueue(client, {"function": "count", "kwargs": {"duration": 0}}))

    assert job.origin == app.config["DEFAULT_QUEUE"] == "default"
    assert job.timeout == app.config["JOB_TIMEOUT"]
    assert job.result_ttl == app.config["RESULT_TTL"]


# --- /check_status ---


def test_check_status_moves_from_queued_to_finished_with_progress_and_timing(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"hello": "world"})

    queued = client.get(f"/check_status?job_id={job_id}").get_json()
    assert queued["status"] == "queued"
    assert queued["function"] == "some_long_function"
    assert queued["queue"] == "default"
    assert queued["enqueued_at"] is not None
    assert (queued["started_at"], queued["ended_at"], queued["progress"]) == (None, None, None)

    work()

    finished = client.get(f"/check_status?job_id={job_id}").get_json()
    assert finished["status"] == "finished"
    assert finished["progress"]["percent"] == 100
    assert finished["progress"]["message"] == "done"
    enqueued_at, started_at, ended_at = (
        datetime.fromisoformat(finished[key]) for key in ("enqueued_at", "started_at", "ended_at")
    )
    assert enqueued_at <= started_at <= ended_at
    assert "error" not in finished


def test_check_status_of_failed_job_shows_the_error(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})

    work()

    body = client.get(f"/check_status?job_id={job_id}").get_json()
    assert body["status"] == "failed"
    assert body["error"].startswith("ValueError: duration must be between 0 and")
    assert body["ended_at"] is not None


# --- /get_result ---


def test_get_result_of_finished_job_returns_the_result(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    work()

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["job_id"] == job_id
    assert body["status"] == "finished"
    assert body["result"]["counted"] == 1


@pytest.mark.parametrize("value", [0, [], False, "", {}], ids=repr)
def test_get_result_returns_falsy_results_as_results(
    client: FlaskClient, work: Callable[[], None], value: Any
) -> None:
    # Named, not in the seed format: a bare [] is an empty batch.
    job_id = enqueue(client, {"function": "some_long_function", "args": [value]})
    work()

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 200
    result = response.get_json()["result"]["result"]
    assert result == value
    assert type(result) is type(value)


def test_get_result_while_queued_answers_202_with_retry_after(app: Flask, client: FlaskClient) -> None:
    job_id = enqueue(client, {"hello": "world"})

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 202
    assert response.headers["Retry-After"] == str(app.config["RETRY_AFTER_SECONDS"])
    body = response.get_json()
    assert body["status"] == "queued"
    assert "result" not in body


def test_get_result_of_failed_job_returns_the_error(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["status"] == 409
    assert error["code"] == "job_failed"
    assert error["job_id"] == job_id
    assert error["job_status"] == "failed"
    assert error["error"] == "ValueError: duration must be between 0 and 3600 seconds, not -1"
    assert "traceback" not in error
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("config", [{"EXPOSE_TRACEBACKS": True}])
def test_get_result_of_failed_job_includes_the_traceback_when_configured(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 409
    traceback = response.get_json()["error"]["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert "ValueError: duration must be between 0 and 3600 seconds" in traceback


def test_get_result_serves_a_resized_image_as_png(client: FlaskClient, work: Callable[[], None]) -> None:
    response = upload_image(client, png((40, 20)), width="64", height="32")
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    work()

    result = client.get(f"/get_result?job_id={job_id}")

    assert result.status_code == 200
    assert result.mimetype == "image/png"
    picture = Image.open(io.BytesIO(result.data))
    assert picture.format == "PNG"
    assert picture.size == (64, 32)


def test_get_result_serves_a_report_as_html(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "render_report", "kwargs": {"title": "Nightly", "job_ids": ["a1"]}})
    work()

    response = client.get(f"/get_result?job_id={job_id}")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "<h1>Nightly</h1>" in html
    assert f'href="http://localhost/check_status?job_id={job_id}"' in html
    assert 'href="http://localhost/get_result?job_id=a1"' in html


def test_report_escapes_the_title_a_client_sent(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "render_report", "kwargs": {"title": "<script>alert(1)</script>"}})
    work()

    html = client.get(f"/get_result?job_id={job_id}").get_data(as_text=True)

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- multipart uploads ---


def test_multipart_form_fields_are_coerced_to_parameter_types(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    response = upload_image(
        client, png((20, 20)), width="64", height="32", crop="[0, 0, 10, 10]", queue="low", timeout="45"
    )

    assert response.status_code == 202, response.get_json()
    job = fetch(redis, response.get_json()["job_id"])
    assert job.kwargs["width"] == 64
    assert job.kwargs["height"] == 32
    assert type(job.kwargs["width"]) is int
    assert job.kwargs["crop"] == [0, 0, 10, 10]
    assert job.origin == "low"
    assert job.timeout == 45


def test_multipart_plain_address_for_send_email_is_accepted(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    # `to` is `str | list[str]`: a single address typed into a form is a string, not JSON.
    response = post_form(
        client, {"function": "send_email", "to": "alice@example.com", "subject": "Hi", "body": "Hello"}
    )

    assert response.status_code == 202, response.get_json()
    assert fetch(redis, response.get_json()["job_id"]).kwargs["to"] == "alice@example.com"


def test_multipart_file_for_a_parameter_that_takes_no_file_is_refused(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    response = post_form(
        client,
        {
            "function": "resize_image",
            "image": (io.BytesIO(png((4, 4))), "a.png", "image/png"),
            "width": (io.BytesIO(b"64"), "width.txt", "text/plain"),
        },
    )

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "unexpected_file"
    assert "'width'" in error["message"]
    assert error["file_parameters"] == ["image"]
    assert queued_job_count(app, redis) == 0


def test_multipart_without_function_is_refused(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    response = post_form(client, {"image": (io.BytesIO(png((4, 4))), "a.png", "image/png"), "width": "8"})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "missing_function"
    assert queued_job_count(app, redis) == 0


@pytest.mark.parametrize("config", [{"PROPAGATE_EXCEPTIONS": False}])
def test_multipart_kwargs_field_that_is_not_an_object_is_refused(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    response = post_form(client, {"function": "count", "kwargs": "[1]", "duration": "1"})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_arguments"
    assert queued_job_count(app, redis) == 0


def test_multipart_filename_is_sanitised_and_never_a_path(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    response = upload_image(client, png((10, 10)), filename="../../etc/passwd", width="8", height="8")
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]

    filename = fetch(redis, job_id).kwargs["image"]["$file"]["filename"]
    assert filename == "etc_passwd"
    work()
    result = client.get(f"/get_result?job_id={job_id}")
    assert result.status_code == 200
    assert Image.open(io.BytesIO(result.data)).size == (8, 8)
    assert "passwd" not in result.headers["Content-Disposition"]


def test_two_uploads_with_the_same_filename_produce_separate_results(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    first = upload_image(client, png((30, 10), "red"), filename="photo.png", width="12", height="6")
    second = upload_image(client, png((10, 30), "blue"), filename="photo.png", width="5", height="15")
    assert (first.status_code, second.status_code) == (202, 202)

    work()

    red = Image.open(io.BytesIO(client.get(f"/get_result?job_id={first.get_json()['job_id']}").data))
    blue = Image.open(io.BytesIO(client.get(f"/get_result?job_id={second.get_json()['job_id']}").data))
    assert red.size == (12, 6)
    assert blue.size == (5, 15)
    assert red.convert("RGB").getpixel((6, 3)) == (255, 0, 0)
    assert blue.convert("RGB").getpixel((2, 7)) == (0, 0, 255)
