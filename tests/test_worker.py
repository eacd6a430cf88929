"""The worker: jobs run inside the app, with the enqueuing server's URLs, JSON only, job ids in logs."""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

import app.jobs.echo as echo_module
from app.jobs.progress import report_progress
from app.log import FORMAT, JobIdFilter
from app.worker import SimpleWorker
from tests.conftest import enqueue


def status_of(client: FlaskClient, job_id: str) -> dict[str, Any]:
    """Return the /check_status body of a job."""
    response = client.get("/check_status", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_job_reads_the_app_config_while_it_runs(
    app: Flask, client: FlaskClient, work: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(echo_module, "time", types.SimpleNamespace(sleep=slept.append))
    app.config["ECHO_DELAY_SECONDS"] = 3.0
    job_id = enqueue(client, {"anything": 1})
    work()

    status = status_of(client, job_id)
    assert status["status"] == "finished"
    # The echo job splits ECHO_DELAY_SECONDS into one-second steps: it read 3.0 from the app.
    assert slept == [1.0, 1.0, 1.0]
    assert status["progress"]["total"] == 3


def test_jobs_build_external_urls_from_the_server_that_enqueued_each(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    base_urls = ["http://one.example.test/", "https://two.example.test:8443/"]
    job_ids = []
    for base_url in base_urls:
        response = client.post("/enqueue", json={"function": "render_report"}, base_url=base_url)
        assert response.status_code == 202, response.get_json()
        job_ids.append(response.get_json()["job_id"])
    # One worker runs both jobs: each gets the URL of its own request, not the worker's or the last one.
    work()

    for base_url, job_id in zip(base_urls, job_ids, strict=True):
        response = client.get("/get_result", query_string={"job_id": job_id})
        assert response.status_code == 200, response.get_data(as_text=True)
        links = re.findall(r'href="([^"]+)"', response.get_data(as_text=True))
        assert links == [base_url, f"{base_url}check_status?job_id={job_id}"]


def test_worker_uses_json_even_when_told_to_use_pickle(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"function": "some_long_function", "args": [{"kept": "as JSON"}]})

    worker = SimpleWorker(
        list(app.config["QUEUES"]),
        connection=redis,
        app=app,
        serializer="rq.serializers.DefaultSerializer",
    )
    worker.work(burst=True)

    response = client.get("/get_result", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["result"]["result"] == {"kept": "as JSON"}


def test_log_lines_written_by_a_job_carry_its_job_id(
    client: FlaskClient, work: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(JobIdFilter())
    job_id = enqueue(client, {"function": "some_long_function", "args": ["hello"]})
    work()

    [record] = [r for r in caplog.records if r.name == echo_module.log.name]
    assert record.getMessage().startswith("echoed ")
    assert record.job_id == job_id  # type: ignore[attr-defined]
    assert f"[job {job_id}]" in logging.Formatter(FORMAT).format(record)


def test_log_lines_outside_a_job_carry_a_dash_for_the_job_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(JobIdFilter())
    logging.getLogger("tests.outside_a_job").info("not in a job")

    [record] = [r for r in caplog.records if r.name == "tests.outside_a_job"]
    assert record.job_id == "-"  # type: ignore[attr-defined]
    assert "[job -] not in a job" in logging.Formatter(FORMAT).format(record)


def test_report_progress_outside_a_job_returns_none_and_stores_nothing(
    app: Flask, redis: fakeredis.FakeRedis
) -> None:
    with app.app_context():
        assert report_progress(5, 10, "halfway") is None
        # Outside a job even a total that would be refused inside one is ignored.
        assert report_progress(1, 0) is None
    assert redis.keys("*") == []
