"""The Postman flow end to end: gunicorn, worker.sh and Redis, all real, over HTTP."""

from __future__ import annotations

import io
import re

import pytest
import requests
from PIL import Image

from tests.integration.conftest import HTTP_TIMEOUT, enqueue, get, wait_for_job

pytestmark = pytest.mark.usefixtures("workers")

QUEUES = ("high", "default", "low")


def test_echo_job_is_followed_from_queued_to_finished_and_returns_its_input(server: str) -> None:
    response = requests.post(f"{server}/enqueue", json={"hello": "world"}, timeout=HTTP_TIMEOUT)

    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["job_id"]
    assert accepted["status"] == "queued"
    assert accepted["function"] == "some_long_function"
    assert response.headers["Location"] == f"{server}/check_status?job_id={job_id}"
    early = get(server, "/get_result", job_id=job_id)
    assert early.status_code == 202, early.text
    assert early.json()["status"] in {"queued", "started"}

    seen = wait_for_job(server, job_id)

    assert {body["status"] for body in seen[:-1]} & {"queued", "started"}
    running = [body for body in seen if body["status"] == "started"]
    assert any(body["progress"] and body["progress"]["message"] == "waiting" for body in running), seen
    assert seen[-1]["progress"]["percent"] == 100
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["status"] == "finished"
    assert result.json()["result"]["input"] == {"hello": "world"}
    assert result.json()["result"]["result"] == {"hello": "world"}


def test_count_job_in_the_function_format_reports_progress_and_its_count(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 2}})["job_id"]

    seen = wait_for_job(server, job_id)

    messages = {body["progress"]["message"] for body in seen if body["progress"]}
    assert "counted 1 of 2" in messages, seen
    assert seen[-1]["progress"]["percent"] == 100
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 2
    assert result.json()["result"]["duration"] == 2


def test_falsy_input_gives_a_finished_job_with_result_zero(server: str) -> None:
    job_id = enqueue(server, 0)["job_id"]

    wait_for_job(server, job_id)

    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["status"] == "finished"
    assert result.json()["result"]["result"] == 0
    assert result.json()["result"]["input"] == 0


def test_failed_job_reports_its_error_in_status_and_result(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": -1}})["job_id"]
    expected = "ValueError: duration must be between 0 and 3600 seconds, not -1"

    status = wait_for_job(server, job_id, until="failed")[-1]

    assert status["error"] == expected
    assert "traceback" not in status
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 409, result.text
    error = result.json()["error"]
    assert error["status"] == 409
    assert error["code"] == "job_failed"
    assert error["job_status"] == "failed"
    assert error["error"] == expected
    assert expected in error["message"]


def test_uploaded_image_comes_back_resized_as_png(server: str) -> None:
    upload = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(upload, format="PNG")

    response = requests.post(
        f"{server}/enqueue",
        data={"function": "resize_image", "width": "32", "height": "16"},
        files={"image": ("photo.png", upload.getvalue(), "image/png")},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    wait_for_job(server, job_id)

    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"] == "image/png"
    picture = Image.open(io.BytesIO(result.content))
    assert picture.format == "PNG"
    assert picture.size == (32, 16)


def test_dashboard_shows_our_queues_workers_and_jobs(server: str) -> None:
    job_ids = {
        queue: enqueue(server, {"function": "count", "kwargs": {"duration": 0}, "queue": queue})["job_id"]
        for queue in QUEUES
    }
    for job_id in job_ids.values():
        wait_for_job(server, job_id)

    page = get(server, "/rq/")
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")

    queues = get(server, "/rq/0/data/queues.json")
    assert queues.status_code == 200, queues.text
    by_name = {queue["name"]: queue for queue in queues.json()["queues"]}
    assert set(QUEUES) <= set(by_name)
    for queue in QUEUES:
        assert by_name[queue]["finished_job_registry_count"] >= 1, by_name[queue]

    workers = get(server, "/rq/0/data/workers.json")
    assert workers.status_code == 200, workers.text
    assert len(workers.json()["workers"]) >= 2

    job_id = job_ids["default"]
    job_page = get(server, f"/rq/0/view/job/{job_id}")
    assert job_page.status_code == 200, job_page.text[:2000]
    assert job_id in job_page.text
    job_data = get(server, f"/rq/0/data/job/{job_id}.json")
    assert job_data.status_code == 200, job_data.text[:2000]
    assert job_data.json()["status"] == "finished"
    assert job_data.json()["result"]["counted"] == 1


def test_report_links_point_at_the_server_that_enqueued_it(server: str) -> None:
    other = enqueue(server, {"function": "count", "kwargs": {"duration": 0}})["job_id"]
    job_id = enqueue(server, {"function": "render_report", "kwargs": {"title": "Links", "job_ids": [other]}})[
        "job_id"
    ]
    wait_for_job(server, job_id)

    result = get(server, "/get_result", job_id=job_id)

    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"].startswith("text/html")
    links = re.findall(r'href="([^"]*)"', result.text)
    assert links, result.text
    assert all(link.startswith(f"{server}/") for link in links), links
    assert f"{server}/check_status?job_id={job_id}" in links
    assert f"{server}/check_status?job_id={other}" in links
    assert f"{server}/get_result?job_id={other}" in links
