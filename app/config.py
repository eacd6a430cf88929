"""Configuration: defaults per environment, overridden by the environment and `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


class Config:
    """Defaults shared by every environment; each key can be set in the environment."""

    SERVICE_NAME = "rq-job-server"
    REDIS_URL = "redis://localhost:6379/0"
    # Seconds the web app waits on Redis before answering 503.
    REDIS_SOCKET_TIMEOUT = 5.0
    # Queues in priority order: workers drain the first before the next.
    QUEUES = ("high", "default", "low")
    DEFAULT_QUEUE = "default"
    # Jobs: defaults and the bounds a client may choose within.
    JOB_TIMEOUT = 600
    MAX_JOB_TIMEOUT = 3600
    RESULT_TTL = 86400
    MAX_RESULT_TTL = 7 * 86400
    FAILURE_TTL = 7 * 86400
    # A body without "function" is handed whole to this registered function.
    DEFAULT_FUNCTION = "some_long_function"
    ECHO_DELAY_SECONDS = 10.0
    RETRY_AFTER_SECONDS = 1
    EXPOSE_TRACEBACKS = False
    # Request bodies, uploads included (Flask answers 413 above it).
    MAX_CONTENT_LENGTH = 10 * MIB
    MAX_IMAGE_PIXELS = 40_000_000
    # Outgoing mail for the email job.
    SMTP_HOST = "localhost"
    SMTP_PORT = 25
    SMTP_USERNAME = ""
    SMTP_PASSWORD = ""
    SMTP_STARTTLS = False
    SMTP_SSL = False
    SMTP_TIMEOUT = 30.0
    MAIL_SENDER = "jobs@localhost"
    # Logging: console always, a rotating file when LOG_FILE is set.
    LOG_LEVEL = "INFO"
    LOG_FILE = ""
    DASHBOARD_ENABLED = True
    # Trust X-Forwarded-* from this many proxies (0 when clients reach gunicorn directly).
    PROXY_COUNT = 0
    # Workers and periodic jobs
    # A busy worker renews its job's heartbeat every JOB_MONITORING_INTERVAL seconds; a job whose
    # heartbeat is JOB_HEARTBEAT_GRACE seconds overdue is abandoned (its worker died): failed or
    # retried by the next maintenance, which idle workers run every MAINTENANCE_INTERVAL seconds.
    JOB_MONITORING_INTERVAL = 5
    JOB_HEARTBEAT_GRACE = 10
    MAINTENANCE_INTERVAL = 5
    # Registered functions enqueued on a schedule by `python -m app.periodic`: a JSON list of
    # {"function", "args", "kwargs", "cron" or "interval", "queue", "timeout", "result_ttl", "name"}.
    PERIODIC_JOBS = "[]"
    # Listing and control
    # GET /jobs page size: default and upper bound.
    JOBS_PER_PAGE = 50
    MAX_JOBS_PER_PAGE = 200
    # Most index entries GET /jobs reads when it must look into jobs (function=, status=failed alone).
    JOBS_SCAN_LIMIT = 10_000
    # Seconds POST /jobs/<id>/cancel waits for a worker to stop a running job before answering 202.
    CANCEL_WAIT_SECONDS = 5.0
    # Job options: bounds a client may choose within.
    # Retries of a failed job, and the longest wait before one (seconds).
    MAX_RETRIES = 10
    MAX_RETRY_INTERVAL = 3600
    # ttl: how long a job may wait to start; failure_ttl: how long a failed job is kept.
    MAX_JOB_TTL = 30 * 86400
    MAX_FAILURE_TTL = 30 * 86400
    # Furthest a job may be scheduled ahead (delay or at), in seconds.
    MAX_DELAY = 7 * 86400
    MAX_DEPENDENCIES = 20
    # Most jobs one POST /enqueue may carry as a JSON array (a batch); a bigger one is answered 413.
    MAX_BATCH_SIZE = 1000
    # How long an Idempotency-Key (or a client job_id) replays its job instead of making another.
    IDEMPOTENCY_TTL = 86400
    # Operations: health, metrics, logs, Redis beyond one box
    # Log lines as "text" or "json" (one JSON object per line): web, workers and gunicorn's access log.
    LOG_FORMAT = "text"
    # Redis Sentinel: "host:port,host:port"; empty to connect to REDIS_URL's host. With Sentinels,
    # REDIS_URL still gives the master's password, database and TLS (rediss://), not its address.
    REDIS_SENTINELS = ""
    REDIS_SENTINEL_MASTER = "mymaster"
    # The Sentinels' own password (requirepass in sentinel.conf), when they have one.
    REDIS_SENTINEL_PASSWORD = ""
    # Browser page, live updates and dashboard
    # Seconds between reads of Redis by an event stream or a ?wait= long poll.
    EVENTS_POLL_INTERVAL = 0.5
    # An event stream ends after this many seconds (EventSource reconnects): it holds a thread.
    EVENTS_MAX_DURATION = 60.0
    # Longest ?wait= of /check_status and /get_result, in seconds.
    MAX_WAIT = 30.0
    # Jobs in the page's live table.
    PAGE_JOBS = 50
    # HTTP Basic login for /rq; without a password the dashboard is open (a warning in production).
    DASHBOARD_USERNAME = "admin"
    DASHBOARD_PASSWORD = ""
    # Security: API keys, rate limits, origins, sizes.
    # A JSON list of {"name", "key" (or "sha256" of it), "scopes": [read, submit, cancel, admin],
    # "own_jobs_only"}; empty: open mode, every client may do everything.
    API_KEYS = "[]"
    # Requests per key (per client address in open mode) and window, such as "120/60"; empty: none.
    RATE_LIMIT = ""
    # Other origins whose browser pages may post here (the page's own origin always may).
    ALLOWED_ORIGINS: tuple[str, ...] = ()
    # Largest result a job may store, as JSON bytes (arguments are bounded by MAX_CONTENT_LENGTH).
    MAX_RESULT_BYTES = 16 * MIB


class DevelopmentConfig(Config):
    """Local development: more log output and tracebacks in job errors."""

    LOG_LEVEL = "DEBUG"
    EXPOSE_TRACEBACKS = True


class ProductionConfig(Config):
    """Production: the defaults, read from the environment."""


class TestingConfig(Config):
    """Unit tests: nothing read from the environment, jobs without delays."""

    TESTING = True
    ECHO_DELAY_SECONDS = 0.0
    DASHBOARD_ENABLED = True


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def load_environment() -> None:
    """Load the project's `.env` into the environment, never overriding what is set."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)


def build_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings for APP_ENV: class defaults, then environment, then overrides."""
    overrides = dict(overrides or {})
    name = overrides.get("APP_ENV") or os.environ.get("APP_ENV", "development")
    if name not in CONFIGS:
        raise ValueError(f"APP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}")
    defaults = CONFIGS[name]
    settings = {key: getattr(defaults, key) for key in dir(defaults) if key.isupper()}
    settings["APP_ENV"] = name
    if name != "testing":
        load_environment()
        for key, default in settings.items():
            if key in os.environ:
                settings[key] = parse_value(key, os.environ[key], default)
    settings.update(overrides)
    return settings


def parse_value(key: str, raw: str, default: Any) -> Any:
    """Convert an environment string to the type of the setting's default."""
    try:
        if isinstance(default, bool):
            return parse_bool(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def parse_bool(raw: str) -> bool:
    """Read yes/no words the way people write them in `.env` files."""
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)
