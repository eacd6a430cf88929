"""The page at / in Chromium: submit every job from its form, watch it live, see what it did."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from tests.browser.conftest import NO_PLAYWRIGHT, Mailbox, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

# Skipped, not failed, where Playwright is missing (the conftest says so for every test).
expect = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT).expect

pytestmark = pytest.mark.usefixtures("workers")

PAYLOAD = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def png(width: int, height: int) -> bytes:
    """Return a PNG picture."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 60, 20)).save(out, format="PNG")
    return out.getvalue()


def open_page(page: Page, path: str = "/") -> None:
    """Open the page and wait until it is live."""
    page.goto(path)
    expect(page.locator("#function")).not_to_be_empty()


def submit(page: Page, function: str, fill: Callable[[Page], None] | None = None) -> Locator:
    """Pick the function, fill its form, enqueue it; return the job's row in the table."""
    page.select_option("#function", function)
    if fill:
        fill(page)
    page.click("#submit")
    status = page.locator("#form-status")
    expect(status).to_have_attribute("data-job-id", re.compile(r".+"))
    job_id = status.get_attribute("data-job-id")
    expect(status).to_contain_text(f"Job {job_id[:8]} is ")  # type: ignore[index]
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    return row


def status_of(row: Locator) -> Locator:
    """Return the status badge of a job's row."""
    return row.locator(".badge")


def fill_count(seconds: str) -> Callable[[Page], None]:
    """Fill the count form with a duration."""
    return lambda page: page.fill("#arg-duration", seconds)


def fill_echo(page: Page) -> None:
    page.fill("#arg-some_input", '{"hello": "browser"}')


def fill_image(page: Page) -> None:
    page.set_input_files("#arg-image", {"name": "photo.png", "mimeType": "image/png", "buffer": png(90, 60)})
    page.fill("#arg-width", "32")
    page.fill("#arg-height", "16")


def fill_report(page: Page) -> None:
    page.fill("#arg-title", "Browser report")


def fill_email(page: Page) -> None:
    page.fill("#arg-to", "someone@example.test")
    page.fill("#arg-subject", "From the browser")
    page.fill("#arg-body", "Hello.")


def check_count(row: Locator, page: Page, mailbox: Mailbox) -> None:
    expect(row.locator(".outcome pre")).to_contain_text('"counted": 1')


def check_echo(row: Locator, page: Page, mailbox: Mailbox) -> None:
    expect(row.locator(".outcome pre")).to_contain_text('"hello": "browser"')


def check_image(row: Locator, page: Page, mailbox: Mailbox) -> None:
    image = row.locator(".outcome img")
    expect(image).to_be_visible()
    size = wait_until(
        lambda: image.evaluate("(img) => img.complete && [img.naturalWidth, img.naturalHeight]")
    )
    assert size == [32, 16]


def check_report(row: Locator, page: Page, mailbox: Mailbox) -> None:
    link = row.locator(".outcome a")
    expect(link).to_have_text("Open the result (text/html)")
    assert link.get_attribute("href", timeout=1000).startswith("http")  # type: ignore[union-attr]


def check_email(row: Locator, page: Page, mailbox: Mailbox) -> None:
    expect(row.locator(".outcome pre")).to_contain_text("someone@example.test")
    assert any(envelope.rcpt_tos == ["someone@example.test"] for envelope in mailbox.envelopes)


@pytest.mark.parametrize(
    ("function", "fill", "check"),
    [
        ("count", fill_count("1"), check_count),
        ("some_long_function", fill_echo, check_echo),
        ("resize_image", fill_image, check_image),
        ("render_report", fill_report, check_report),
        ("send_email", fill_email, check_email),
    ],
    ids=["count", "some_long_function", "resize_image", "render_report", "send_email"],
)
def test_each_function_runs_from_its_form(
    page: Page,
    mailbox: tuple[Mailbox, int],
    function: str,
    fill: Callable[[Page], None],
    check: Callable[[Locator, Page, Mailbox], None],
) -> None:
    open_page(page)

    row = submit(page, function, fill)

    expect(status_of(row)).to_have_text("finished")
    check(row, page, mailbox[0])


def test_the_form_follows_each_function_s_parameters(page: Page) -> None:
    open_page(page)

    page.select_option("#function", "resize_image")
    expect(page.locator("#arg-image")).to_have_attribute("type", "file")
    expect(page.locator("#arg-width")).to_have_value("256")
    expect(page.locator("#arg-width")).to_have_attribute("type", "number")
    expect(page.get_by_label("crop")).to_have_value("")
    page.select_option("#function", "count")
    expect(page.locator("#arg-duration")).to_have_value("5")
    expect(page.locator("#arg-image")).to_have_count(0)


def test_missing_or_malformed_arguments_are_shown_at_their_field(page: Page) -> None:
    open_page(page)
    page.select_option("#function", "resize_image")
    page.fill("#arg-crop", "[1, 2")

    page.click("#submit")

    expect(page.locator("#arg-image")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#arg-image-error")).to_have_text("Choose a file.")
    expect(page.locator("#arg-crop-error")).to_have_text("Enter valid JSON.")
    expect(page.locator("#form-status")).to_have_text("Check the highlighted arguments.")


def test_a_refusal_by_the_server_is_shown(page: Page) -> None:
    open_page(page)
    page.select_option("#function", "count")
    page.click("details.options summary")
    page.fill("#opt-timeout", "999999")

    page.click("#submit")

    expect(page.locator("#form-status")).to_contain_text("timeout must be")
    expect(page.locator("#form-status")).to_have_class(re.compile("error"))


def test_progress_climbs_to_100_percent_live(page: Page) -> None:
    open_page(page)
    expect(page.locator("#live")).to_have_text("Live")
    row = submit(page, "count", fill_count("3"))
    bar = row.locator("progress")
    seen: list[float] = []

    def finished() -> bool:
        if bar.count():
            seen.append(bar.evaluate("(bar) => bar.value"))
        return status_of(row).inner_text() == "finished"

    wait_until(finished, timeout=30, interval=0.05)

    assert any(0 < value < 100 for value in seen), seen
    assert seen == sorted(seen)
    expect(bar).to_have_js_property("value", 100)
    expect(row.locator(".progress-text")).to_have_text("100 % · counted 3 of 3")
    expect(row.locator(".time")).to_contain_text("ran 3")


def test_a_failure_is_shown_readably_with_a_requeue_button(page: Page) -> None:
    open_page(page)

    row = submit(page, "count", fill_count("-1"))

    expect(status_of(row)).to_have_text("failed")
    expect(row.locator(".outcome .error")).to_have_text(
        "Failed: ValueError: duration must be between 0 and 3600 seconds, not -1"
    )
    expect(row.get_by_role("button", name=re.compile("^Requeue job"))).to_be_visible()
    expect(row.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)


def test_a_long_job_is_canceled_from_its_row(page: Page) -> None:
    open_page(page)
    row = submit(page, "count", lambda page: page.fill("#arg-length", "long"))
    expect(status_of(row)).to_have_text("started")

    row.get_by_role("button", name=re.compile("^Cancel job")).click()

    expect(status_of(row)).to_have_text("stopped")
    expect(row.locator(".outcome .error")).to_contain_text("Stopped:")
    expect(row.get_by_role("button", name=re.compile("^Requeue job"))).to_be_visible()


def test_what_a_job_returns_or_raises_is_shown_as_text(page: Page, dialogs: list[str]) -> None:
    open_page(page)

    echoed = submit(page, "some_long_function", lambda page: page.fill("#arg-some_input", PAYLOAD))
    failed = submit(
        page,
        "send_email",
        lambda page: (
            page.fill("#arg-to", PAYLOAD),
            page.fill("#arg-subject", PAYLOAD),
            page.fill("#arg-body", "x"),
        ),
    )

    expect(echoed.locator(".outcome pre")).to_contain_text(PAYLOAD.replace('"', '\\"'))
    expect(failed.locator(".outcome .error")).to_contain_text(f"{PAYLOAD!r} is not an email address")
    assert page.evaluate("window.__xss") is None
    assert page.locator(".outcome script, .outcome img[src='x']").count() == 0
    assert dialogs == []
    assert page.evaluate("window.__violations") == []


def test_without_event_source_the_table_falls_back_to_polling(page: Page) -> None:
    page.context.add_init_script("delete window.EventSource;")
    open_page(page)

    expect(page.locator("#live")).to_have_text("Updating every 2 s")
    row = submit(page, "count", fill_count("1"))

    expect(status_of(row)).to_have_text("finished", timeout=30_000)
    expect(row.locator(".outcome pre")).to_contain_text('"counted": 1')


def test_the_status_filter_shows_only_those_jobs(page: Page) -> None:
    open_page(page)
    failed = submit(page, "count", fill_count("-1"))
    expect(status_of(failed)).to_have_text("failed")

    page.get_by_label("Failed").check()

    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator(f'tr[data-job-id="{failed.get_attribute("data-job-id")}"]')).to_be_visible()
    badges = page.locator("#jobs .badge").all_inner_texts()
    assert badges and set(badges) <= {"failed", "stopped", "canceled"}


def test_the_page_has_its_landmarks_and_labels(page: Page) -> None:
    open_page(page)

    expect(page.get_by_role("main")).to_have_count(1)
    expect(page.get_by_role("heading", name="Run a job")).to_be_visible()
    expect(page.get_by_role("heading", name="Recent jobs")).to_be_visible()
    expect(page.get_by_label("Function")).to_be_visible()
    expect(page.get_by_role("button", name="Enqueue")).to_be_enabled()
    expect(page.get_by_role("region", name="Recent jobs")).to_be_visible()
    # The table scrolls sideways on narrow screens: its box takes the keyboard focus.
    expect(page.get_by_role("region", name="Job table")).to_have_attribute("tabindex", "0")


def test_the_page_works_offline_from_this_server_alone(page: Page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    open_page(page)
    expect(page.locator("#live")).to_have_text("Live")

    origin = page.evaluate("location.origin")
    assert requested
    assert all(url.startswith(origin) or url.startswith(("blob:", "data:")) for url in requested), requested
