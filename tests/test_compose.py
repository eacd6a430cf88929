"""docker-compose.yml (and the Sentinel overlay): valid for Compose, with health checks and waits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SENTINEL = ROOT / "docker-compose.sentinel.yml"
APP_SERVICES = ("web", "worker", "cron", "dashboard")


def compose_command() -> list[str] | None:
    """Return the Compose command line of this machine (v1 `docker-compose` or v2 `docker compose`)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def load(path: Path) -> dict[str, Any]:
    """Parse a Compose file, merge keys (<<) and anchors resolved."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """Return docker-compose.yml's services."""
    found: dict[str, Any] = load(COMPOSE)["services"]
    return found


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, SENTINEL]], ids=["compose", "compose+sentinel"])
def test_compose_config_accepts_the_files(files: list[Path]) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed (.ci/run installs it as root)")
    # The interpolated values only: no Docker engine is needed (nor contacted) by `config`.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    arguments = [argument for path in files for argument in ("-f", str(path))]
    result = subprocess.run(
        [*command, *arguments, "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_compose_runs_redis_web_worker_cron_and_dashboard(services: dict[str, Any]) -> None:
    assert {"redis", *APP_SERVICES} <= set(services)


def test_redis_has_a_password_an_append_only_file_and_a_health_check_that_logs_in(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"])

    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD")
    check = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in check
    assert '-a "$$REDIS_PASSWORD"' in check
    assert "PONG" in check


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_logs_in_to_redis_and_waits_until_it_is_healthy(
    services: dict[str, Any], service: str
) -> None:
    environment = services[service]["environment"]

    assert environment["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert environment["REDIS_URL"].endswith("@redis:6379/0")
    assert services[service]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_web_checks_its_health_on_health(services: dict[str, Any]) -> None:
    check = services["web"]["healthcheck"]

    assert check["test"][0] == "CMD"
    assert "http://127.0.0.1:5000/health" in " ".join(check["test"])


def test_the_dashboard_is_the_apps_own_rq_on_a_port_of_its_own(services: dict[str, Any]) -> None:
    # Not the stock rq-dashboard command: it renders job arguments unescaped and has no login.
    dashboard = services["dashboard"]

    assert dashboard["command"] == ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:app"]
    assert dashboard["environment"]["PORT"] == "9181"
    assert dashboard["environment"]["DASHBOARD_ENABLED"] == "true"
    assert dashboard["ports"] == ["9181:9181"]
    assert "http://127.0.0.1:9181/health" in " ".join(dashboard["healthcheck"]["test"])


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_gets_the_keys_and_logins_from_the_environment(
    services: dict[str, Any], service: str
) -> None:
    environment = services[service]["environment"]

    assert environment["API_KEYS"] == "${API_KEYS:-[]}"
    assert environment["DASHBOARD_USERNAME"] == "${DASHBOARD_USERNAME:-admin}"
    assert environment["DASHBOARD_PASSWORD"] == "${DASHBOARD_PASSWORD:-}"
    assert environment["RATE_LIMIT"] == "${RATE_LIMIT:-}"


def test_worker_scales_and_shares_the_metrics_directory_with_web(services: dict[str, Any]) -> None:
    worker = services["worker"]

    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["command"] == ["./worker.sh", "1"]
    assert "metrics:/app/instance/metrics" in worker["volumes"]
    assert "metrics:/app/instance/metrics" in services["web"]["volumes"]


def test_the_image_checks_its_health_on_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "HEALTHCHECK" in dockerfile
    assert "/health'" in dockerfile
    assert "USER app" in dockerfile


def test_the_sentinel_overlay_points_every_app_service_at_the_sentinels() -> None:
    overlay = load(SENTINEL)["services"]

    sentinels = [name for name in overlay if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    for name in sentinels:
        assert "--sentinel" in " ".join(overlay[name]["command"])
        assert overlay[name]["healthcheck"]["test"]
    assert "--replicaof redis 6379" in " ".join(overlay["redis-replica"]["command"])
    for service in APP_SERVICES:
        environment = overlay[service]["environment"]
        assert environment["REDIS_SENTINELS"] == "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
        assert environment["REDIS_SENTINEL_MASTER"] == "mymaster"
        waits = overlay[service]["depends_on"]
        assert {name: waits[name]["condition"] for name in waits} == dict.fromkeys(
            ["redis", *sentinels], "service_healthy"
        )
