"""rq-dashboard at /rq in Chromium: every job of ours opens, and nothing a client sent ever runs."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
from PIL import Image
from redis import Redis
from rq import Queue

from app.queue import SERIALIZER
from tests.browser.conftest import NO_PLAYWRIGHT
from tests.integration.conftest import HTTP_TIMEOUT, enqueue, wait_for_job

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Skipped, not failed, where Playwright is missing (the conftest says so for every test).
expect = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT).expect

pytestmark = pytest.mark.usefixtures("workers")

# Sets window.__xss (or opens an alert) if a page ever treats it as HTML.
PAYLOAD = '<script>window.__xss=1;alert(1)</script><img src=x onerror="window.__xss=2;alert(2)">'


@pytest.fixture(scope="module")
def jobs(server: str, redis_url: str) -> Iterator[dict[str, str]]:
    """Run a job of each kind, with the payload in whatever a client controls."""
    ids = {
        "finished": enqueue(server, {"function": "some_long_function", "kwargs": {"some_input": PAYLOAD}}),
        "failed": enqueue(
            server, {"function": "send_email", "kwargs": {"to": PAYLOAD, "subject": PAYLOAD, "body": "x"}}
        ),
        "report": enqueue(server, {"function": "render_report", "kwargs": {"title": PAYLOAD}}),
        "parent": enqueue(server, {"function": "count", "kwargs": {"duration": 0}, "delay": 600}),
    }
    ids = {kind: answer["job_id"] for kind, answer in ids.items()}
    ids["child"] = enqueue(
        server, {"function": "count", "kwargs": {"duration": 0}, "depends_on": [ids["parent"]]}
    )["job_id"]
    picture = io.BytesIO()
    Image.new("RGB", (40, 30)).save(picture, format="PNG")
    image = requests.post(
        f"{server}/enqueue",
        data={"function": "resize_image", "width": "8", "height": "8"},
        files={"image": (PAYLOAD, picture.getvalue(), "image/png")},
        timeout=HTTP_TIMEOUT,
    )
    ids["image"] = image.json()["job_id"]
    # What /enqueue never writes, but a job in this Redis may hold: a description and meta of its own.
    with Redis.from_url(redis_url) as connection:
        crafted = Queue("default", connection=connection, serializer=SERIALIZER).enqueue(
            "app.jobs.count.count", kwargs={"duration": 0}, description=PAYLOAD, meta={"note": PAYLOAD}
        )
    ids["crafted"] = crafted.id
    for kind in ("finished", "report", "image", "crafted"):
        wait_for_job(server, ids[kind])
    wait_for_job(server, ids["failed"], until="failed")
    yield ids
    requests.post(f"{server}/jobs/{ids['parent']}/cancel", timeout=HTTP_TIMEOUT)


def assert_nothing_ran(page: Page, dialogs: list[str]) -> None:
    """Check that no payload ran and the page's Content-Security-Policy blocked nothing of its own."""
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.evaluate("window.__violations") == []


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("finished", PAYLOAD.replace('"', '\\"')),
        ("failed", "is not an email address"),
        ("report", "report.html"),
        ("image", "resized.png"),
        ("child", "Depends on"),
        ("parent", "scheduled"),
        ("crafted", PAYLOAD),
    ],
)
def test_the_job_page_shows_every_job_and_runs_none_of_its_values(
    page: Page, dialogs: list[str], jobs: dict[str, str], kind: str, shown: str
) -> None:
    page.goto(f"/rq/0/view/job/{jobs[kind]}")

    data = page.locator("#job-data")
    expect(data).to_contain_text("Description")
    expect(data).to_contain_text(shown)
    assert data.locator("script, img").count() == 0
    assert_nothing_ran(page, dialogs)


def test_the_job_page_of_a_chained_job_links_its_parent(page: Page, jobs: dict[str, str]) -> None:
    page.goto(f"/rq/0/view/job/{jobs['child']}")

    link = page.locator("#job-data").get_by_role("link", name=jobs["parent"])
    expect(link).to_have_attribute("href", f"/rq/0/view/job/{jobs['parent']}")


def test_the_crafted_job_shows_its_description_and_metadata_as_text(
    page: Page, dialogs: list[str], jobs: dict[str, str]
) -> None:
    page.goto(f"/rq/0/view/job/{jobs['crafted']}")

    expect(page.locator(".description-scroll")).to_have_text(PAYLOAD)
    expect(page.locator("#job-data")).to_contain_text('"note": "<script>window.__xss=1;alert(1)</script>')
    assert_nothing_ran(page, dialogs)


@pytest.mark.parametrize("registry", ["failed", "finished", "deferred", "scheduled", "queued"])
def test_the_job_lists_open_and_run_nothing(
    page: Page, dialogs: list[str], jobs: dict[str, str], registry: str
) -> None:
    page.goto(f"/rq/0/view/jobs/default/{registry}/100/dsc/1")

    rows = page.locator("#jobs tr")
    expect(rows.first).not_to_have_text("Loading...")
    if registry == "failed":
        expect(page.locator(f'tr[data-job-id="{jobs["failed"]}"] pre.exc_info')).to_contain_text(
            "is not an email address"
        )
    if registry == "finished":
        expect(page.locator(f'tr[data-job-id="{jobs["crafted"]}"] .description')).to_have_text(PAYLOAD)
    assert_nothing_ran(page, dialogs)


@pytest.mark.parametrize("path", ["/rq/", "/rq/0/view/workers", "/rq/0/view/jobs"])
def test_the_overview_pages_open_and_fill_in(
    page: Page, dialogs: list[str], jobs: dict[str, str], path: str
) -> None:
    page.goto(path)

    table = page.locator("table tbody")
    expect(table.locator("tr").first).not_to_have_text("Loading...")
    assert_nothing_ran(page, dialogs)


def test_a_queue_name_in_the_link_runs_nothing(page: Page, dialogs: list[str]) -> None:
    page.goto("/rq/0/view/jobs/x');window.__xss=3;alert(3);('/queued/8/asc/1")

    expect(page.locator("#select-queue")).to_have_value(re.compile("window.__xss=3"))
    assert_nothing_ran(page, dialogs)


def test_the_dashboard_requeues_a_failed_job_that_stays_readable(
    page: Page, server: str, jobs: dict[str, str]
) -> None:
    failed = enqueue(server, {"function": "count", "kwargs": {"duration": -1}})["job_id"]
    wait_for_job(server, failed, until="failed")
    page.goto(f"/rq/0/view/job/{failed}")
    expect(page.locator("#requeue-job-btn")).to_be_visible()

    with page.expect_response(re.compile(f"/rq/job/{failed}/requeue$")) as answer:
        page.click("#requeue-job-btn")

    assert answer.value.status == 200
    body: dict[str, Any] = requests.get(f"{server}/check_status", params={"job_id": failed}, timeout=5).json()
    assert body["function"] == "count"
    assert body["status"] in {"queued", "started", "failed"}
