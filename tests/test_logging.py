"""Logs: one format (text or JSON lines), the request id on every line a request logs, echoed."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.config import Config as GunicornConfig
from rq.logutils import ColorizingStreamHandler

from app import gunicorn_log, log

GENERATED = re.compile(r"[0-9a-f]{32}")
view_log = logging.getLogger("tests.in_a_request")


@pytest.fixture
def app(app: Flask) -> Flask:
    """Return the app with a route that logs a line."""

    def logs() -> str:
        view_log.info("inside the view")
        return "ok"

    app.add_url_rule("/_logs", "logs", logs)
    return app


@pytest.fixture
def saved_logging() -> Iterator[None]:
    """Put the root logger and RQ's loggers back as they were after the test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    looks = [(handler, handler.formatter, handler.level) for handler in handlers]
    rq_loggers = {
        name: (logging.getLogger(name).propagate, list(logging.getLogger(name).handlers))
        for name in log.RQ_LOGGERS
    }
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler, formatter, handler_level in looks:
        handler.setFormatter(formatter)
        handler.setLevel(handler_level)
    root.setLevel(level)
    for name, (propagate, rq_handlers) in rq_loggers.items():
        logger = logging.getLogger(name)
        logger.propagate = propagate
        logger.handlers[:] = rq_handlers


def record_of(caplog: pytest.LogCaptureFixture, logger: str) -> logging.LogRecord:
    """Return the one record a logger wrote."""
    [record] = [record for record in caplog.records if record.name == logger]
    return record


def test_a_sane_x_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/functions", headers={"X-Request-ID": "abc-123.req_7"})

    assert response.headers["X-Request-ID"] == "abc-123.req_7"


@pytest.mark.parametrize(
    "header",
    [None, "", "has spaces", 'quote"d', "x" * 129, "tab\there", "<script>", "é"],
    ids=["missing", "empty", "spaces", "quote", "too-long", "tab", "markup", "non-ascii"],
)
def test_a_missing_or_insane_x_request_id_is_replaced_by_a_new_one(
    client: FlaskClient, header: str | None
) -> None:
    headers = {} if header is None else {"X-Request-ID": header}

    response = client.get("/functions", headers=headers)

    assert GENERATED.fullmatch(response.headers["X-Request-ID"])


def test_every_request_gets_its_own_id(client: FlaskClient) -> None:
    first = client.get("/functions").headers["X-Request-ID"]
    second = client.get("/functions").headers["X-Request-ID"]

    assert first != second


def test_error_responses_echo_the_request_id_too(client: FlaskClient) -> None:
    response = client.get("/no/such/route", headers={"X-Request-ID": "lost-1"})

    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "lost-1"


def test_lines_logged_during_a_request_carry_its_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(log.ContextFilter())

    response = client.get("/_logs", headers={"X-Request-ID": "req-42"})

    record = record_of(caplog, view_log.name)
    assert record.request_id == "req-42"  # type: ignore[attr-defined]
    assert record.job_id == "-"  # type: ignore[attr-defined]
    assert "[request req-42] [job -] inside the view" in logging.Formatter(log.FORMAT).format(record)
    assert response.headers["X-Request-ID"] == "req-42"


def test_the_generated_id_is_the_one_logged_and_echoed(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(log.ContextFilter())

    response = client.get("/_logs")

    assert record_of(caplog, view_log.name).request_id == response.headers["X-Request-ID"]  # type: ignore[attr-defined]


def test_lines_outside_a_request_carry_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(log.ContextFilter())
    logging.getLogger("tests.outside").info("no request here")

    assert record_of(caplog, "tests.outside").request_id == "-"  # type: ignore[attr-defined]


def json_line(record: logging.LogRecord) -> dict[str, object]:
    """Format a record as the JSON formatter does and parse it back."""
    log.ContextFilter().filter(record)
    line = log.JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_json_lines_carry_time_level_logger_ids_message_and_extra_fields() -> None:
    record = logging.LogRecord("app.api", logging.WARNING, __file__, 1, "job %s is %s", ("j1", "late"), None)
    record.job_id = "j1"
    record.attempt = 2

    line = json_line(record)

    assert line.pop("time", "").endswith("+00:00")  # type: ignore[union-attr]
    assert line == {
        "level": "WARNING",
        "logger": "app.api",
        "request_id": "-",
        "job_id": "j1",
        "message": "job j1 is late",
        "attempt": 2,
    }


def test_json_lines_keep_the_traceback_in_one_line() -> None:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        record = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info()
        )

    line = json_line(record)

    assert "ValueError: broken" in str(line["exception"])


def test_json_lines_of_a_request_carry_its_id(client: FlaskClient) -> None:
    stream = io.StringIO()
    handler = log.prepare_handler(logging.StreamHandler(stream), "json")
    view_log.addHandler(handler)
    view_log.setLevel(logging.INFO)
    try:
        client.get("/_logs", headers={"X-Request-ID": "json-1"})
    finally:
        view_log.removeHandler(handler)
        view_log.setLevel(logging.NOTSET)

    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {
        "logger": view_log.name,
        "request_id": "json-1",
        "message": "inside the view",
    }.items() <= line.items()


@pytest.mark.usefixtures("saved_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_sends_every_line_in_the_chosen_format(log_format: str) -> None:
    log.configure("INFO", log_format)
    stream = io.StringIO()
    [handler] = [
        h
        for h in logging.getLogger().handlers
        if getattr(h, log.OURS, False) and type(h) is logging.StreamHandler
    ]
    handler.setStream(stream)  # type: ignore[attr-defined]

    logging.getLogger("tests.configured").info("configured")
    logging.getLogger("tests.configured").debug("below the level")

    [line] = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line)["message"] == "configured"
    else:
        assert line.endswith("INFO tests.configured [request -] [job -] configured")


@pytest.mark.usefixtures("saved_logging")
def test_configure_also_writes_log_file_in_the_same_format(tmp_path: Path) -> None:
    log.configure("INFO", "json", str(tmp_path / "app.log"))

    logging.getLogger("tests.to_file").warning("kept on disk")

    [line] = (tmp_path / "app.log").read_text().splitlines()
    assert json.loads(line)["message"] == "kept on disk"


@pytest.mark.usefixtures("saved_logging")
def test_configure_gives_rqs_worker_lines_the_app_format() -> None:
    worker_log = logging.getLogger("rq.worker")
    worker_log.addHandler(ColorizingStreamHandler())
    worker_log.propagate = False

    log.configure("INFO", "text")

    assert not any(isinstance(handler, ColorizingStreamHandler) for handler in worker_log.handlers)
    assert worker_log.propagate


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of text, json, not 'xml'"):
        log.configure("INFO", "xml")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_gunicorns_access_lines_carry_the_request_id_in_the_apps_format(
    monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    monkeypatch.setenv("LOG_FORMAT", log_format)
    cfg = GunicornConfig()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"')
    logger = gunicorn_log.GunicornLogger(cfg)
    stream = io.StringIO()
    [handler] = [handler for handler in logger.access_log.handlers if getattr(handler, "_gunicorn", False)]
    handler.setStream(stream)  # type: ignore[attr-defined]
    response = SimpleNamespace(status="202 ACCEPTED", headers=[("X-Request-ID", "acc-9")], sent=57)
    request = SimpleNamespace(headers=[("User-Agent", "curl/8")])
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/enqueue?x=1",
        "PATH_INFO": "/enqueue",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        "HTTP_USER_AGENT": "curl/8",
    }

    logger.access(response, request, environ, timedelta(milliseconds=12))

    [line] = stream.getvalue().splitlines()
    if log_format == "text":
        prefix, message = line.split(" [job -] ")
        assert prefix.endswith(" INFO gunicorn.access [request acc-9]")
        assert message == '10.0.0.7 "POST /enqueue?x=1 HTTP/1.1" 202 57 12ms "curl/8"'
    else:
        fields = json.loads(line)
        assert fields["request_id"] == "acc-9"
        assert fields["logger"] == "gunicorn.access"
        assert {
            "method": "POST",
            "path": "/enqueue",
            "query": "x=1",
            "status": 202,
            "bytes": 57,
        }.items() <= fields.items()
        assert fields["duration_ms"] == 12
        assert fields["remote_addr"] == "10.0.0.7"
