"""The app's Response: a Location already in URI form goes out as it is, any other is converted."""

from __future__ import annotations

import pytest
from flask import Flask, redirect
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.urls import iri_to_uri

from app.response import URI


@settings(max_examples=500)
@given(st.from_regex(URI, fullmatch=True))
def test_a_location_sent_as_it_is_is_one_werkzeug_would_not_change(location: str) -> None:
    assert iri_to_uri(location) == location


@pytest.mark.parametrize(
    "location",
    [
        "http://localhost/check_status?job_id=0f6c3f5e-3b7e-4d62-9c51-0d2f1a9e8b7c",
        "https://jobs.example.com/check_status?job_id=nightly_report-2",
        "http://127.0.0.1:5000/prefix/check_status?job_id=a",
    ],
)
def test_the_urls_the_api_links_to_are_sent_as_they_are(location: str) -> None:
    assert URI.fullmatch(location)


@pytest.mark.parametrize(
    ("location", "sent"),
    [
        ("http://bücher.example/straße?q=ü", "http://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC"),
        ("http://Example.COM/a b", "http://example.com/a%20b"),
        ("/relative/päth", "/relative/p%C3%A4th"),
    ],
)
def test_any_other_location_is_converted_to_a_uri(app: Flask, location: str, sent: str) -> None:
    @app.get("/go")
    def go() -> object:
        return redirect(location)

    response = app.test_client().get("/go")

    assert response.status_code == 302
    assert response.headers["Location"] == sent
