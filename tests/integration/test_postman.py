"""The Postman collection, run by newman against gunicorn, real workers and a real redis-server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException

from tests.integration.conftest import ROOT, Child

COLLECTION = ROOT / "postman" / "job-server.postman_collection.json"
ENVIRONMENT = ROOT / "postman" / "local.postman_environment.json"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
# The whole collection takes a few seconds; its polls are bounded by maxPolls x pollIntervalMs.
NEWMAN_TIMEOUT = 180


@pytest.fixture
def newman() -> Path:
    """Return newman from node_modules; skip, saying why, when it cannot run here."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: newman (the Postman collection's runner) needs it")
    if not NEWMAN.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: `npm ci` installs newman from package-lock.json")
        pytest.skip("newman is not installed: run `npm ci --no-audit --no-fund` (`make test` does)")
    return NEWMAN


def requests_in(items: list[dict[str, object]]) -> list[dict[str, object]]:
    """Return the requests of a collection's items, folders unfolded."""
    found: list[dict[str, object]] = []
    for item in items:
        if "item" in item:
            found.extend(requests_in(item["item"]))  # type: ignore[arg-type]
        else:
            found.append(item)
    return found


def test_every_request_has_tests_and_a_unique_name() -> None:
    collection = json.loads(COLLECTION.read_text())
    requests = requests_in(collection["item"])
    names = [request["name"] for request in requests]
    assert len(names) == len(set(names))
    for request in requests:
        scripts = [event for event in request["event"] if event["listen"] == "test"]  # type: ignore[attr-defined]
        assert any("pm.test(" in "\n".join(event["script"]["exec"]) for event in scripts), request["name"]
    environment = json.loads(ENVIRONMENT.read_text())
    assert {value["key"] for value in environment["values"]} >= {"baseUrl"}


def test_the_collection_covers_every_route_and_method(app: Flask) -> None:
    adapter = app.url_map.bind("localhost")
    covered = set()
    for request in requests_in(json.loads(COLLECTION.read_text())["item"]):
        method = request["request"]["method"]  # type: ignore[index]
        raw = request["request"]["url"]["raw"]  # type: ignore[index]
        path = urlsplit(re.sub(r"\{\{[^}]+\}\}", "x", raw.removeprefix("{{baseUrl}}"))).path
        with suppress(HTTPException):  # the requests for an unknown route or a wrong method
            rule, _ = adapter.match(path, method=method, return_rule=True)
            covered.add((rule.rule, method))
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] not in {"static", "rq_dashboard"}
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert not served - covered, f"routes no request of the collection calls: {sorted(served - covered)}"


def test_the_postman_collection_passes_against_the_live_server(
    newman: Path, server: str, workers: Child
) -> None:
    # `newman` comes first: without it the test skips before starting any server.
    command = [
        str(newman),
        "run",
        str(COLLECTION),
        "-e",
        str(ENVIRONMENT),
        "--env-var",
        f"baseUrl={server}",
        "--reporters",
        "cli",
        "--color",
        "off",
        "--timeout-request",
        "30000",
    ]
    try:
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=NEWMAN_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"newman ran over {NEWMAN_TIMEOUT}s:\n{error.stdout}\n{error.stderr}")
    print(run.stdout)  # shown with -s, or when the test fails
    assert run.returncode == 0, f"newman exited with {run.returncode}:\n{run.stdout}\n{run.stderr}"
