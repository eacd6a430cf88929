"""Each job function run end to end: enqueued over the API, run by a burst worker, read back."""

from __future__ import annotations

import base64
import email
import io
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from flask.testing import FlaskClient
from PIL import Image
from rq import get_current_job
from rq.job import Job

import app.jobs.count as count_module
from app.jobs.progress import report_progress
from app.redis_server import free_port
from tests.conftest import enqueue

RED = (255, 0, 0)
BLUE = (0, 0, 255)
SENDER = "jobs@example.test"


def status_of(client: FlaskClient, job_id: str) -> dict[str, Any]:
    """Return the /check_status body of a job."""
    response = client.get("/check_status", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def result_of(client: FlaskClient, job_id: str) -> Any:
    """Return the JSON result of a finished job from /get_result."""
    response = client.get("/get_result", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["result"]


def file_result_of(client: FlaskClient, job_id: str) -> tuple[str, bytes]:
    """Return the content type and bytes of a finished job's file result."""
    response = client.get("/get_result", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.content_type, response.get_data()


def error_of(client: FlaskClient, job_id: str) -> str:
    """Return the error /check_status gives for a job that must have failed."""
    body = status_of(client, job_id)
    assert body["status"] == "failed", body
    error: str = body["error"]
    return error


# some_long_function


def test_some_long_function_echoes_its_input_with_the_job_timing(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    body = {"name": "Ada", "numbers": [1, 2, 3]}
    job_id = enqueue(client, body)
    work()

    result = result_of(client, job_id)
    assert result["input"] == body
    assert result["result"] == body
    assert result["job_id"] == job_id
    enqueued = datetime.fromisoformat(result["job_enqueued_at"])
    started = datetime.fromisoformat(result["job_started_at"])
    assert enqueued <= started


def test_some_long_function_reports_full_progress_when_done(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "some_long_function", "args": ["hello"]})
    work()

    status = status_of(client, job_id)
    assert status["status"] == "finished"
    assert status["progress"]["percent"] == 100.0
    assert status["progress"]["message"] == "done"


# count


@pytest.fixture
def instant_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let count run its steps without waiting: its sleeps return at once."""
    fake_time = types.SimpleNamespace(monotonic=count_module.time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(count_module, "time", fake_time)


def test_count_finishes_with_progress_at_its_total(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": 0.05}})
    work()

    progress = status_of(client, job_id)["progress"]
    assert progress["current"] == progress["total"] == 1
    assert progress["percent"] == 100.0
    assert progress["message"] == "counted 1 of 1"
    assert result_of(client, job_id)["counted"] == 1


def test_count_saves_its_progress_after_every_step(
    client: FlaskClient, work: Callable[[], None], monkeypatch: pytest.MonkeyPatch, instant_clock: None
) -> None:
    saved: list[dict[str, Any]] = []

    def report_and_read_back(current: float, total: float = 100, message: str | None = None) -> Any:
        progress = report_progress(current, total, message)
        job = get_current_job()
        assert job is not None
        stored = Job.fetch(job.id, connection=job.connection, serializer=job.serializer)
        saved.append(stored.meta["progress"])
        return progress

    monkeypatch.setattr(count_module, "report_progress", report_and_read_back)
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": 3}})
    work()

    assert [(p["current"], p["total"], p["message"]) for p in saved] == [
        (1, 3, "counted 1 of 3"),
        (2, 3, "counted 2 of 3"),
        (3, 3, "counted 3 of 3"),
    ]
    assert [p["percent"] for p in saved] == [33.3, 66.7, 100.0]
    assert status_of(client, job_id)["progress"]["current"] == 3


def test_count_with_the_short_preset_counts_its_five_seconds(
    client: FlaskClient, work: Callable[[], None], instant_clock: None
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"length": "short"}})
    work()

    result = result_of(client, job_id)
    assert result["duration"] == 5.0
    assert result["counted"] == 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"length": "huge"}, "ValueError: length must be one of short, medium, long, not 'huge'"),
        ({"duration": -1}, "ValueError: duration must be between 0 and 3600 seconds, not -1"),
    ],
)
def test_count_with_an_invalid_length_or_duration_fails_with_the_reason(
    client: FlaskClient, work: Callable[[], None], kwargs: dict[str, Any], error: str
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": kwargs})
    work()

    assert error_of(client, job_id) == error
    response = client.get("/get_result", query_string={"job_id": job_id})
    assert response.status_code == 409
    assert error in response.get_json()["error"]["message"]


# resize_image


def image_bytes(picture: Image.Image, image_format: str) -> bytes:
    """Encode a Pillow image in the given format."""
    out = io.BytesIO()
    picture.save(out, format=image_format)
    return out.getvalue()


def two_colour_png() -> bytes:
    """Return a 100x50 PNG: red on the left half, blue on the right half."""
    picture = Image.new("RGB", (100, 50), RED)
    picture.paste(BLUE, (50, 0, 100, 50))
    return image_bytes(picture, "PNG")


def upload_image(client: FlaskClient, data: bytes, filename: str, content_type: str, **fields: str) -> str:
    """Post a multipart resize_image job and return its id."""
    form: dict[str, Any] = {"function": "resize_image", **fields}
    form["image"] = (io.BytesIO(data), filename, content_type)
    response = client.post("/enqueue", data=form, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id


def open_png_result(client: FlaskClient, job_id: str) -> Image.Image:
    """Return the PNG a resize_image job produced, checking its content type."""
    content_type, data = file_result_of(client, job_id)
    assert content_type == "image/png"
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"
    return picture


def assert_colour(actual: Any, expected: tuple[int, int, int]) -> None:
    """Check a pixel is the expected colour, allowing for resampling by a step or two."""
    assert all(abs(a - e) <= 2 for a, e in zip(actual[:3], expected, strict=True)), actual


@pytest.mark.parametrize(
    ("image_format", "filename", "content_type"),
    [("PNG", "photo.png", "image/png"), ("JPEG", "photo.jpg", "image/jpeg")],
)
def test_resize_image_returns_a_png_of_the_requested_size(
    client: FlaskClient, work: Callable[[], None], image_format: str, filename: str, content_type: str
) -> None:
    upload = image_bytes(Image.new("RGB", (120, 80), (10, 200, 30)), image_format)
    job_id = upload_image(client, upload, filename, content_type, width="40", height="25")
    work()

    assert open_png_result(client, job_id).size == (40, 25)


@pytest.mark.parametrize(
    ("crop", "colour"),
    [("[0, 0, 50, 50]", RED), ("[50, 0, 100, 50]", BLUE)],
    ids=["left-half-red", "right-half-blue"],
)
def test_resize_image_applies_the_crop_box(
    client: FlaskClient, work: Callable[[], None], crop: str, colour: tuple[int, int, int]
) -> None:
    job_id = upload_image(
        client, two_colour_png(), "halves.png", "image/png", width="10", height="10", crop=crop
    )
    work()

    picture = open_png_result(client, job_id).convert("RGB")
    assert picture.size == (10, 10)
    for corner in [(0, 0), (9, 0), (0, 9), (9, 9), (5, 5)]:
        assert_colour(picture.getpixel(corner), colour)


def test_resize_image_with_a_crop_box_outside_the_image_fails_with_the_reason(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = upload_image(client, two_colour_png(), "halves.png", "image/png", crop="[0, 0, 200, 50]")
    work()

    assert error_of(client, job_id) == (
        "ValueError: crop box [0, 0, 200, 50] does not fit inside the 100x50 image"
    )


def test_resize_image_of_a_file_that_is_not_an_image_fails_with_the_reason(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = upload_image(client, b"just some text, no pixels", "notes.txt", "text/plain")
    work()

    assert error_of(client, job_id).startswith("ValueError: the upload is not an image this server can read")


def test_resize_image_accepts_a_file_argument_in_json(client: FlaskClient, work: Callable[[], None]) -> None:
    encoded = base64.b64encode(two_colour_png()).decode("ascii")
    image = {"$file": {"base64": encoded, "filename": "halves.png", "content_type": "image/png"}}
    job_id = enqueue(
        client,
        {
            "function": "resize_image",
            "kwargs": {"image": image, "width": 8, "height": 6, "crop": [50, 0, 100, 50]},
        },
    )
    work()

    picture = open_png_result(client, job_id).convert("RGB")
    assert picture.size == (8, 6)
    assert_colour(picture.getpixel((4, 3)), BLUE)


# send_email


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that keeps every envelope it receives."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        """Return the received messages, parsed."""
        return [
            email.message_from_bytes(envelope.content, policy=policy.default) for envelope in self.envelopes
        ]


@pytest.fixture
def smtp_port() -> int:
    """Return a port for the test's SMTP server; nothing listens there unless `smtp_server` runs."""
    return free_port()


@pytest.fixture
def config(smtp_port: int) -> dict[str, Any]:
    """Point the email job at the SMTP port of the test."""
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp_port, "MAIL_SENDER": SENDER, "SMTP_TIMEOUT": 5.0}


@pytest.fixture
def smtp_server(smtp_port: int) -> Iterator[RecordingHandler]:
    """Run a real SMTP server on the test's SMTP port and return what it receives."""
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield handler
    controller.stop()


def test_send_email_delivers_a_plain_text_message(
    client: FlaskClient, work: Callable[[], None], smtp_server: RecordingHandler
) -> None:
    job_id = enqueue(
        client,
        {
            "function": "send_email",
            "kwargs": {"to": "ada@example.test", "subject": "Your report", "body": "It is ready."},
        },
    )
    work()

    assert result_of(client, job_id)["sent_to"] == ["ada@example.test"]
    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == ["ada@example.test"]
    [message] = smtp_server.messages()
    assert message["Subject"] == "Your report"
    assert message["To"] == "ada@example.test"
    assert message["From"] == SENDER
    assert message.get_body(("plain",)).get_content().strip() == "It is ready."
    assert message.get_body(("html",)) is None


def test_send_email_with_html_adds_an_html_part(
    client: FlaskClient, work: Callable[[], None], smtp_server: RecordingHandler
) -> None:
    job_id = enqueue(
        client,
        {
            "function": "send_email",
            "kwargs": {
                "to": ["ada@example.test", "bob@example.test"],
                "subject": "Both parts",
                "body": "Plain words.",
                "html": "<p>Rich <b>words</b>.</p>",
            },
        },
    )
    work()

    assert result_of(client, job_id)["sent_to"] == ["ada@example.test", "bob@example.test"]
    [envelope] = smtp_server.envelopes
    assert envelope.rcpt_tos == ["ada@example.test", "bob@example.test"]
    [message] = smtp_server.messages()
    assert message["To"] == "ada@example.test, bob@example.test"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().strip() == "Plain words."
    assert message.get_body(("html",)).get_content().strip() == "<p>Rich <b>words</b>.</p>"


def test_send_email_to_an_invalid_address_fails_and_sends_nothing(
    client: FlaskClient, work: Callable[[], None], smtp_server: RecordingHandler
) -> None:
    job_id = enqueue(
        client,
        {"function": "send_email", "kwargs": {"to": "not-an-address", "subject": "Hi", "body": "Hello"}},
    )
    work()

    assert error_of(client, job_id) == "ValueError: 'not-an-address' is not an email address"
    assert smtp_server.envelopes == []


def test_send_email_fails_when_the_smtp_server_refuses_the_connection(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    # No smtp_server fixture: nothing listens on the configured port.
    job_id = enqueue(
        client,
        {"function": "send_email", "kwargs": {"to": "ada@example.test", "subject": "Hi", "body": "Hello"}},
    )
    work()

    error = error_of(client, job_id)
    assert "ConnectionRefusedError" in error
    assert "Connection refused" in error


# render_report

BASE_URL = "http://jobs.example.test:8080/"


def links_in(html: str) -> list[str]:
    """Return every href of an HTML page."""
    return re.findall(r'href="([^"]+)"', html)


def test_render_report_links_to_the_server_that_enqueued_it(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    response = client.post(
        "/enqueue",
        json={"function": "render_report", "kwargs": {"title": "Weekly", "job_ids": ["abc-1", "def-2"]}},
        base_url=BASE_URL,
    )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    work()

    # Fetched through another host name: the links still name the enqueuing server.
    content_type, data = file_result_of(client, job_id)
    assert content_type == "text/html; charset=utf-8"
    html = data.decode("utf-8")
    assert "<h1>Weekly</h1>" in html
    links = links_in(html)
    assert links
    assert all(link.startswith(BASE_URL) for link in links), links
    assert f"{BASE_URL}check_status?job_id={job_id}" in links
    assert f"{BASE_URL}check_status?job_id=abc-1" in links
    assert f"{BASE_URL}get_result?job_id=def-2" in links
