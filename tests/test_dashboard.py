"""rq-dashboard at /rq on FakeRedis: every job of ours opens, nothing is printed raw, the login works."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import rq_dashboard
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from rq import Queue, Worker
from rq.job import Job, JobStatus

import app.dashboard as dashboard
from app import create_app
from app.queue import SERIALIZER
from tests.conftest import enqueue

# Runs if a page puts it into the document as HTML: the browser tests look for window.__xss.
PAYLOAD = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
PACKAGE_TEMPLATES = Path(rq_dashboard.__file__).parent / "templates" / "rq_dashboard"
OUR_TEMPLATES = Path(dashboard.__file__).parent / "templates" / "rq_dashboard"
REGISTRIES = ("queued", "started", "deferred", "scheduled", "finished", "failed", "canceled")
BROWSER = {"Accept": "text/html"}


def png(width: int = 40, height: int = 30) -> bytes:
    """Return a small PNG picture."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def jobs(client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]) -> dict[str, str]:
    """Create a job of every kind this server makes, with a script in whatever a client controls."""
    ids = {
        "finished": enqueue(client, {"function": "some_long_function", "kwargs": {"some_input": PAYLOAD}}),
        "failed": enqueue(
            client, {"function": "send_email", "kwargs": {"to": PAYLOAD, "subject": PAYLOAD, "body": PAYLOAD}}
        ),
        "report": enqueue(client, {"function": "render_report", "kwargs": {"title": PAYLOAD}}),
        "canceled": enqueue(client, {"function": "count", "kwargs": {"duration": 0}, "delay": 600}),
    }
    image = client.post(
        "/enqueue",
        data={"function": "resize_image", "width": "8", "height": "8", "image": (io.BytesIO(png()), "a.png")},
        content_type="multipart/form-data",
    )
    ids["image"] = image.get_json()["job_id"]
    work()
    assert client.post(f"/jobs/{ids['canceled']}/cancel").status_code == 200
    ids["scheduled"] = enqueue(client, {"function": "count", "kwargs": {"duration": 0}, "delay": 600})
    ids["deferred"] = enqueue(
        client, {"function": "count", "kwargs": {"duration": 0}, "depends_on": [ids["scheduled"]]}
    )
    ids["queued"] = enqueue(client, {"function": "some_long_function", "kwargs": {"some_input": PAYLOAD}})
    # What /enqueue never writes, but a job in this Redis may have: a description and meta of its own.
    crafted = Queue("default", connection=redis, serializer=SERIALIZER).enqueue(
        "app.jobs.count.count", kwargs={"duration": 0}, description=PAYLOAD, meta={"note": PAYLOAD}
    )
    ids["crafted"] = crafted.id
    return ids


def busy_worker(redis: fakeredis.FakeRedis, job_id: str) -> Worker:
    """Register a worker that runs the job, as a real one would while it works."""
    worker = Worker(["default"], connection=redis, serializer=SERIALIZER, name="busy-1")
    worker.register_birth()
    worker.set_state("busy")
    worker.set_current_job_id(job_id)
    job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    with redis.pipeline() as pipe:
        Queue(job.origin, connection=redis).remove(job, pipeline=pipe)
        job.prepare_for_execution(worker.name, pipeline=pipe)
        pipe.execute()
    return worker


# --- The templates ---


def test_the_overridden_templates_are_those_of_the_installed_version() -> None:
    # An upgrade of rq-dashboard must go through these templates again.
    assert rq_dashboard.version.VERSION == dashboard.SUPPORTED_VERSION


def test_every_template_that_printed_raw_values_is_overridden_with_escaped_ones() -> None:
    raw = sorted(
        path.relative_to(PACKAGE_TEMPLATES)
        for path in PACKAGE_TEMPLATES.rglob("*")
        if path.is_file() and "<%=" in path.read_text()
    )

    assert raw, "rq-dashboard's templates changed: check the overrides"
    for relative in raw:
        ours = OUR_TEMPLATES / relative
        assert ours.is_file(), f"{relative} prints values raw and is not overridden"
        assert "<%=" not in ours.read_text(), relative
        assert "<%-" in ours.read_text(), relative


def test_a_queue_name_from_the_url_reaches_the_script_as_json(client: FlaskClient) -> None:
    name = "x');window.__xss=3;('"

    response = client.get(f"/rq/0/view/jobs/{name}/queued/8/asc/1", headers=BROWSER)

    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert name not in text
    assert '"x\\u0027);window.__xss=3;(\\u0027"' in text


# --- Every page and its data open for every kind of job ---


@pytest.mark.parametrize(
    "kind",
    ["finished", "failed", "report", "image", "canceled", "scheduled", "deferred", "queued", "crafted"],
)
def test_the_job_page_and_its_data_open_for_every_kind_of_job(
    client: FlaskClient, jobs: dict[str, str], kind: str
) -> None:
    job_id = jobs[kind]

    page = client.get(f"/rq/0/view/job/{job_id}", headers=BROWSER)
    data = client.get(f"/rq/0/data/job/{job_id}.json")

    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    assert job_id in page.get_data(as_text=True)
    assert PAYLOAD not in page.get_data(as_text=True)
    assert data.status_code == 200, data.get_data(as_text=True)[:500]
    assert data.mimetype == "application/json"
    body = data.get_json()
    assert body["id"] == job_id
    assert body["status"] == client.get(f"/check_status?job_id={job_id}").get_json()["status"]


def test_a_started_job_and_its_worker_open(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    upload = {"$file": {"base64": base64.b64encode(png(400, 400)).decode(), "filename": PAYLOAD}}
    job_id = enqueue(client, {"function": "resize_image", "kwargs": {"image": upload}})
    busy_worker(redis, job_id)

    workers = client.get("/rq/0/data/workers.json")
    data = client.get(f"/rq/0/data/job/{job_id}.json")
    page = client.get("/rq/0/view/workers", headers=BROWSER)

    assert workers.status_code == 200, workers.get_data(as_text=True)[:500]
    (worker,) = workers.get_json()["workers"]
    assert worker["state"] == "busy"
    assert worker["current_job"]["job_id"] == job_id
    # The call string names the function; an upload's base64 is cut short.
    assert worker["current_job"]["call_string"].startswith("app.jobs.images.resize_image(")
    assert len(worker["current_job"]["call_string"]) < 300
    assert data.status_code == 200
    assert data.get_json()["status"] == "started"
    assert page.status_code == 200


def test_a_job_with_dependencies_lists_them(client: FlaskClient, jobs: dict[str, str]) -> None:
    body = client.get(f"/rq/0/data/job/{jobs['deferred']}.json").get_json()

    assert body["depends_on"] == [jobs["scheduled"]]
    assert body["depends_on_status"] == ["active"]


def test_a_file_result_is_shown_as_a_link_to_it(client: FlaskClient, jobs: dict[str, str]) -> None:
    body = client.get(f"/rq/0/data/job/{jobs['image']}.json").get_json()

    assert body["result"]["file"] == "resized.png"
    assert body["result"]["content_type"] == "image/png"
    assert body["result"]["bytes"] > 0
    assert body["result"]["url"] == f"/get_result?job_id={jobs['image']}"
    assert client.get(body["result"]["url"]).mimetype == "image/png"


def test_a_huge_result_is_shown_as_a_link(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "some_long_function", "kwargs": {"some_input": "x" * 120_000}})
    work()

    body = client.get(f"/rq/0/data/job/{job_id}.json").get_json()

    assert body["result"].startswith("(a result of ")
    assert f"/get_result?job_id={job_id}" in body["result"]


def test_the_data_keeps_the_values_as_they_are(client: FlaskClient, jobs: dict[str, str]) -> None:
    # Escaping is the templates' job: the JSON carries the text unchanged.
    crafted = client.get(f"/rq/0/data/job/{jobs['crafted']}.json").get_json()
    failed = client.get(f"/rq/0/data/job/{jobs['failed']}.json").get_json()

    assert crafted["description"] == PAYLOAD
    assert json.loads(crafted["metadata"])["note"] == PAYLOAD
    assert "is not an email address" in failed["exc_info"]
    assert PAYLOAD in failed["exc_info"]


@pytest.mark.parametrize("registry", REGISTRIES)
def test_every_job_list_opens(client: FlaskClient, jobs: dict[str, str], registry: str) -> None:
    page = client.get(f"/rq/0/view/jobs/default/{registry}/8/asc/1", headers=BROWSER)
    data = client.get(f"/rq/0/data/jobs/default/{registry}/8/asc/1.json")

    assert page.status_code == 200
    assert data.status_code == 200
    listed = {job["id"] for job in data.get_json()["jobs"]}
    expected = {job_id for kind, job_id in jobs.items() if kind == registry}
    assert expected <= listed


@pytest.mark.parametrize("path", ["/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs"])
def test_the_overview_pages_open(client: FlaskClient, jobs: dict[str, str], path: str) -> None:
    # /rq/0/view/queues is /rq/ by another name: werkzeug redirects to the one with its defaults.
    assert client.get(path, headers=BROWSER, follow_redirects=True).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rq/0/view/job/no-such-job", 404),
        ("/rq/0/data/job/no-such-job.json", 404),
        ("/rq/0/view/job/bad%20id", 400),
        ("/rq/1/view/queues", 404),
        ("/rq/1/data/queues.json", 404),
    ],
)
def test_unknown_jobs_and_instances_are_json_errors(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)

    assert response.status_code == status
    assert response.get_json()["error"]["status"] == status


# --- Headers ---


def test_dashboard_pages_run_only_their_own_scripts(client: FlaskClient) -> None:
    response = client.get("/rq/", headers=BROWSER)
    policy = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)

    assert nonce
    scripts = re.findall(r"<script\b[^>]*>", response.get_data(as_text=True))
    inline = [tag for tag in scripts if "src=" not in tag and 'type="text/template"' not in tag]
    assert inline == [f'<script type="text/javascript" nonce="{nonce.group(1)}">']
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # A new nonce for every page.
    assert client.get("/rq/", headers=BROWSER).headers["Content-Security-Policy"] != policy


# --- Login ---


@pytest.mark.parametrize("config", [{"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret-pass"}])
@pytest.mark.parametrize(
    "credentials",
    [None, ("ops", "wrong"), ("admin", "s3cret-pass"), ("", ""), ("ops", "s3cret-pass-longer")],
)
@pytest.mark.parametrize("path", ["/rq/", "/rq/0/data/queues.json", "/rq/static/css/main.css"])
def test_with_a_password_the_dashboard_asks_for_the_login(
    client: FlaskClient, credentials: tuple[str, str] | None, path: str
) -> None:
    response = client.get(path, auth=credentials)

    assert response.status_code == 401
    scheme, _, parameters = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Basic"
    assert re.search(r'realm="?rq-dashboard"?', parameters)
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("config", [{"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret-pass"}])
def test_with_the_login_the_dashboard_opens_and_the_api_needs_none(client: FlaskClient) -> None:
    assert client.get("/rq/", auth=("ops", "s3cret-pass")).status_code == 200
    assert client.get("/rq/0/data/queues.json", auth=("ops", "s3cret-pass")).status_code == 200
    assert client.get("/jobs").status_code == 200


def test_without_a_password_the_dashboard_is_open(client: FlaskClient) -> None:
    assert client.get("/rq/").status_code == 200


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"APP_ENV": "production", "DASHBOARD_PASSWORD": ""}, True),
        ({"APP_ENV": "production", "DASHBOARD_PASSWORD": "s3cret-pass"}, False),
        ({"APP_ENV": "production", "DASHBOARD_PASSWORD": "", "DASHBOARD_ENABLED": False}, False),
        ({"APP_ENV": "testing", "DASHBOARD_PASSWORD": ""}, False),
    ],
)
def test_an_open_dashboard_in_production_is_logged_at_start_up(
    redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture, settings: dict[str, Any], warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.dashboard"):
        create_app({**settings, "LOG_FILE": ""}, connection=redis)

    messages = [record.getMessage() for record in caplog.records if record.name == "app.dashboard"]
    assert bool([message for message in messages if "DASHBOARD_PASSWORD is not set" in message]) is warned


# --- Changes from the dashboard ---


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
def test_changes_from_another_site_are_refused(
    client: FlaskClient, jobs: dict[str, str], headers: dict[str, str]
) -> None:
    response = client.post(f"/rq/job/{jobs['failed']}/requeue", headers=headers)

    assert response.status_code == 403
    assert client.get(f"/check_status?job_id={jobs['failed']}").get_json()["status"] == "failed"


def test_requeue_from_the_dashboard_keeps_the_job_readable_as_json(
    client: FlaskClient, redis: fakeredis.FakeRedis, jobs: dict[str, str]
) -> None:
    job_id = jobs["failed"]

    response = client.post(
        f"/rq/job/{job_id}/requeue", headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    )

    assert response.status_code == 200
    assert response.get_json() == {"status": "OK"}
    status = client.get(f"/check_status?job_id={job_id}").get_json()
    assert status["status"] == "queued"
    assert status["function"] == "send_email"
    meta = redis.hget(Job.key_for(job_id), "meta")
    assert meta is not None and SERIALIZER.loads(meta)["function"] == "send_email"  # type: ignore[no-untyped-call]


def test_requeue_all_takes_a_post_only(client: FlaskClient, jobs: dict[str, str]) -> None:
    assert client.get("/rq/requeue/default").status_code == 405

    response = client.post("/rq/requeue/default")

    assert response.status_code == 200
    assert response.get_json() == {"status": "OK", "count": 1}
    assert client.get(f"/check_status?job_id={jobs['failed']}").get_json()["status"] == "queued"


def test_delete_from_the_dashboard_refuses_a_running_job_and_deletes_others(
    client: FlaskClient, redis: fakeredis.FakeRedis, jobs: dict[str, str]
) -> None:
    busy_worker(redis, jobs["queued"])

    running = client.post(f"/rq/job/{jobs['queued']}/delete")
    finished = client.post(f"/rq/job/{jobs['finished']}/delete")

    assert running.status_code == 409
    assert running.get_json()["error"]["code"] == "job_running"
    assert finished.status_code == 200
    assert client.get(f"/check_status?job_id={jobs['finished']}").status_code == 404
    assert (
        Job.fetch(jobs["queued"], connection=redis, serializer=SERIALIZER).get_status() == JobStatus.STARTED
    )


@pytest.mark.parametrize("config", [{"DASHBOARD_ENABLED": False}])
def test_the_dashboard_can_be_turned_off(client: FlaskClient, app: Flask) -> None:
    assert client.get("/rq/").status_code == 404
