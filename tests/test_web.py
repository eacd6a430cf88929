"""The browser page at /: served to browsers only, self-contained, and with the settings it needs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.jobs.registry import registry

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


class Tags(HTMLParser):
    """Collect the start tags of a page with their attributes, and the page's settings."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.settings_text = ""
        self._in_settings = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_settings = tag == "script" and dict(attrs).get("id") == "page-settings"

    def handle_endtag(self, tag: str) -> None:
        self._in_settings = False

    def handle_data(self, data: str) -> None:
        if self._in_settings:
            self.settings_text += data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        """Return the attributes of every `tag` element."""
        return [attrs for name, attrs in self.tags if name == tag]


def page(client: FlaskClient) -> tuple[Tags, Any]:
    """Return the page's tags, and its settings."""
    response = client.get("/", headers={"Accept": BROWSER})
    assert response.status_code == 200
    tags = Tags()
    tags.feed(response.get_data(as_text=True))
    return tags, json.loads(tags.settings_text)


@pytest.mark.parametrize(
    "accept",
    [
        BROWSER,
        "text/html",
        "text/html;q=1, application/json;q=0.5",
    ],
)
def test_a_browser_gets_the_page(client: FlaskClient, accept: str) -> None:
    response = client.get("/", headers={"Accept": accept})

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert '<form id="job-form"' in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", "text/html, application/json", "application/json, text/html;q=0.9"],
)
def test_an_api_client_keeps_getting_json(client: FlaskClient, accept: str | None) -> None:
    response = client.get("/", headers={"Accept": accept} if accept else {})

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json()["service"] == "rq-job-server"


@pytest.mark.parametrize("accept", [BROWSER, "*/*"])
def test_both_answers_vary_on_accept(client: FlaskClient, accept: str) -> None:
    response = client.get("/", headers={"Accept": accept})

    assert "Accept" in response.headers["Vary"]


def test_the_page_runs_only_its_own_files(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": BROWSER})
    policy = response.headers["Content-Security-Policy"]
    tags, _ = page(client)

    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    scripts = tags.all("script")
    # Every script is a file of this server, or data that never runs.
    assert all(attrs.get("src") or attrs.get("type") == "application/json" for attrs in scripts)
    assert not any(attrs.get("style") for _, attrs in tags.tags)
    assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs)


def test_the_page_loads_nothing_from_elsewhere(client: FlaskClient) -> None:
    tags, _ = page(client)

    references = [
        attrs.get("src") or attrs.get("href")
        for _, attrs in tags.tags
        if attrs.get("src") or attrs.get("href")
    ]

    assert references
    assert not [reference for reference in references if re.match(r"(https?:)?//", reference or "")]


def test_the_page_files_are_served(client: FlaskClient) -> None:
    tags, _ = page(client)
    files = [attrs["src"] for attrs in tags.all("script") if attrs.get("src")]
    files += [attrs["href"] for attrs in tags.all("link")]

    for url in files:
        assert url
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.data) > 100 or url.endswith(".svg"), url


def test_the_page_settings_describe_every_registered_function(client: FlaskClient, app: Flask) -> None:
    _, settings = page(client)

    by_name = {function["name"]: function for function in settings["functions"]}
    assert list(by_name) == registry.names()
    for function in registry:
        assert by_name[function.name]["parameters"] == function.describe()["parameters"]
        assert by_name[function.name]["queue"] in app.config["QUEUES"]
    image = {param["name"]: param for param in by_name["resize_image"]["parameters"]}
    assert image["image"]["type"] == "file"
    assert image["width"]["default"] == 256
    assert settings["queues"] == list(app.config["QUEUES"])
    assert settings["page_jobs"] == app.config["PAGE_JOBS"]


def test_the_page_settings_lead_to_routes_that_answer(client: FlaskClient) -> None:
    _, settings = page(client)
    urls = settings["urls"]

    assert client.get(urls["jobs"]).status_code == 200
    assert client.post(urls["enqueue"], json={"function": "count"}).status_code == 202
    job_id = client.get(urls["jobs"]).get_json()["jobs"][0]["job_id"]
    assert client.get(urls["job"].replace("JOB_ID", job_id)).get_json()["job_id"] == job_id
    assert client.post(urls["cancel"].replace("JOB_ID", job_id)).status_code == 200
    assert client.post(urls["requeue"].replace("JOB_ID", job_id)).status_code == 202
    assert urls["events"] == "/events"


def test_the_page_links_to_the_dashboard(client: FlaskClient) -> None:
    tags, _ = page(client)

    assert "/rq/" in [attrs.get("href") for attrs in tags.all("a")]


@pytest.mark.parametrize("config", [{"DASHBOARD_ENABLED": False}])
def test_the_page_has_no_dashboard_link_when_it_is_off(client: FlaskClient) -> None:
    tags, _ = page(client)

    assert not [attrs for attrs in tags.all("a") if (attrs.get("href") or "").startswith("/rq")]


def test_every_form_control_of_the_page_has_a_label(client: FlaskClient) -> None:
    tags, _ = page(client)
    labelled = {attrs.get("for") for attrs in tags.all("label")}

    controls = [attrs for name, attrs in tags.tags if name in {"input", "select", "textarea"}]

    assert controls
    for attrs in controls:
        # Radio buttons sit inside their label; the others name theirs with for=.
        assert attrs.get("type") == "radio" or attrs.get("id") in labelled, attrs
