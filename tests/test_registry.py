"""The job registry: only registered names run, with arguments checked against their signatures."""

from __future__ import annotations

import io
import json
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from rq import Queue

from app import create_app
from app.jobs import count as count_module
from app.jobs.registry import ArgumentsError, FileData, JobFunction, Registry, UnknownFunction, registry

FILE = FileData(b"\x89PNG\r\n\x1a\n\x00\xff", "image/png", "a.png").to_json()


def flags(verbose: bool, level: int | None = None) -> str:
    """Return a summary of the flags (a function for a private registry)."""
    return f"{verbose} {level}"


def queued_job_count(app: Flask, redis: fakeredis.FakeRedis) -> int:
    """Return how many jobs wait on all the app's queues."""
    return sum(Queue(name, connection=redis).count for name in app.config["QUEUES"])


# --- names ---


@pytest.mark.parametrize("name", ["nope", "os.system", "app.jobs.count.count", "Count", ""])
def test_get_refuses_a_name_that_is_not_registered(name: str) -> None:
    with pytest.raises(UnknownFunction):
        registry.get(name)


def test_get_returns_the_registered_function() -> None:
    function = registry.get("count")

    assert function.name == "count"
    assert function.func is count_module.count


def test_register_uses_the_function_name_unless_given_one() -> None:
    private = Registry()
    private.register()(flags)
    private.register("toggles", queue="high", timeout=30)(flags)

    assert private.names() == ["flags", "toggles"]
    assert (private.get("toggles").queue, private.get("toggles").timeout) == ("high", 30)


def test_register_refuses_a_name_twice() -> None:
    private = Registry()
    private.register("job")(flags)

    def other() -> None:
        """Do nothing."""

    with pytest.raises(ValueError, match="'job' is already registered"):
        private.register("job")(other)
    assert private.get("job").func(True) == "True None"


def test_app_registry_refuses_to_replace_a_registered_function() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("count")(flags)

    assert registry.get("count").func is count_module.count


@pytest.mark.parametrize("function", ["os.system", "app.jobs.count.count", "builtins.eval"])
def test_enqueue_refuses_a_dotted_path_and_queues_nothing(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, function: str
) -> None:
    response = client.post("/enqueue", json={"function": function, "args": ["echo hi"]})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unknown_function"
    assert queued_job_count(app, redis) == 0


def test_multipart_enqueue_refuses_a_dotted_path_and_queues_nothing(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    response = client.post(
        "/enqueue", data={"function": "os.system", "command": "id"}, content_type="multipart/form-data"
    )

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unknown_function"
    assert queued_job_count(app, redis) == 0


# --- check_arguments ---


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("count", [], {}),
        ("count", [5], {}),
        ("count", [], {"duration": 2.5}),
        ("count", [], {"length": None}),
        ("count", [1, "short"], {}),
        ("resize_image", [FILE], {}),
        ("resize_image", [], {"image": FILE, "width": 64, "height": 32, "crop": [0, 0, 1, 1]}),
        ("resize_image", [FILE], {"crop": None}),
        ("send_email", ["a@example.com", "s", "b"], {}),
        ("send_email", [["a@example.com", "b@example.com"]], {"subject": "s", "body": "b", "html": None}),
        ("some_long_function", [{"anything": [1, None, True]}], {}),
    ],
    ids=[
        "no-args",
        "int-for-float",
        "float",
        "none-for-optional",
        "positional",
        "file-json-for-file",
        "all-kwargs",
        "none-for-optional-list",
        "string-for-str-or-list",
        "list-for-str-or-list",
        "any",
    ],
)
def test_check_arguments_accepts_arguments_that_fit(
    name: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    registry.get(name).check_arguments(args, kwargs)


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "says"),
    [
        ("resize_image", [FILE], {"width": True}, "argument 'width' must be integer, not boolean"),
        ("count", [True], {}, "argument 'duration' must be number, not boolean"),
        ("resize_image", [FILE], {"width": 1.5}, "argument 'width' must be integer, not number"),
        ("count", [None], {}, "argument 'duration' must be number, not null"),
        ("count", [], {"length": 3}, "argument 'length' must be string or null, not integer"),
        ("resize_image", ["a.png"], {}, "argument 'image' must be file, not string"),
        ("resize_image", [{"$file": {"filename": "a.png"}}], {}, "argument 'image' must be file, not object"),
        ("resize_image", [FILE], {"crop": "0,0,1,1"}, "argument 'crop' must be array or null, not string"),
        ("send_email", [5, "s", "b"], {}, "argument 'to' must be array or string, not integer"),
        ("resize_image", [], {}, "missing a required argument: 'image'"),
        ("count", [], {"speed": 1}, "got an unexpected keyword argument 'speed'"),
        ("count", [1, "short", 3], {}, "too many positional arguments"),
        ("count", [1], {"duration": 2}, "multiple values for argument 'duration'"),
    ],
    ids=[
        "bool-for-int",
        "bool-for-float",
        "float-for-int",
        "none-for-required-float",
        "int-for-optional-str",
        "string-for-file",
        "file-without-base64",
        "string-for-list",
        "int-for-str-or-list",
        "missing-required",
        "unexpected-kwarg",
        "too-many-args",
        "duplicate",
    ],
)
def test_check_arguments_refuses_arguments_that_do_not_fit(
    name: str, args: list[Any], kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ArgumentsError) as raised:
        registry.get(name).check_arguments(args, kwargs)

    assert says in str(raised.value)


# --- FileData ---


def test_file_data_survives_a_json_round_trip() -> None:
    original = FileData(bytes(range(256)), "image/png", "picture.png")

    stored = json.loads(json.dumps(original.to_json()))

    assert FileData.from_json(stored) == original


def test_file_data_from_json_fills_in_defaults() -> None:
    file = FileData.from_json({"$file": {"base64": "aGk="}})

    assert file == FileData(b"hi", "application/octet-stream", "file")


@pytest.mark.parametrize("encoded", ["not base64!", "aGk", "aG\nk="], ids=["symbols", "padding", "newline"])
def test_file_data_from_json_refuses_invalid_base64(encoded: str) -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        FileData.from_json({"$file": {"base64": encoded}})


@pytest.mark.parametrize(
    "value",
    [
        {"base64": "aGk="},
        {"$file": {"base64": 5}},
        {"$file": "aGk="},
        {"$file": {"base64": "aGk="}, "extra": 1},
        "aGk=",
    ],
    ids=["no-file-key", "base64-not-string", "file-not-object", "extra-key", "string"],
)
def test_file_data_from_json_refuses_values_that_are_not_files(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a file"):
        FileData.from_json(value)


def test_file_job_takes_file_json_and_returns_its_file_as_json() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(out, format="PNG")
    image = FileData(out.getvalue(), "image/png", "green.png").to_json()

    with create_app({"APP_ENV": "testing"}, connection=fakeredis.FakeRedis()).app_context():
        result = registry.get("resize_image").func(image, width=4, height=2)

    stored = FileData.from_json(json.loads(json.dumps(result)))
    assert stored.content_type == "image/png"
    assert Image.open(io.BytesIO(stored.data)).size == (4, 2)


# --- describe ---


def test_describe_gives_name_doc_and_typed_parameters() -> None:
    assert registry.get("count").describe() == {
        "name": "count",
        "doc": "Count one step a second for `duration` seconds (or a short/medium/long preset).",
        "parameters": [
            {
                "name": "duration",
                "kind": "positional_or_keyword",
                "type": "number",
                "required": False,
                "default": 5.0,
            },
            {
                "name": "length",
                "kind": "positional_or_keyword",
                "type": "string or null",
                "required": False,
                "default": None,
            },
        ],
    }


def test_describe_marks_required_parameters_and_gives_no_default_for_them() -> None:
    private = Registry()
    private.register()(flags)

    assert private.get("flags").describe() == {
        "name": "flags",
        "doc": "Return a summary of the flags (a function for a private registry).",
        "parameters": [
            {"name": "verbose", "kind": "positional_or_keyword", "type": "boolean", "required": True},
            {
                "name": "level",
                "kind": "positional_or_keyword",
                "type": "integer or null",
                "required": False,
                "default": None,
            },
        ],
    }


def test_describe_names_file_parameters() -> None:
    function = registry.get("resize_image")

    assert function.file_parameters == ["image"]
    assert function.describe()["parameters"][0]["type"] == "file"
    assert registry.get("count").file_parameters == []


# --- coerce_form_value ---


def private_function() -> JobFunction:
    """Return `flags` registered in a private registry."""
    private = Registry()
    private.register()(flags)
    return private.get("flags")


@pytest.mark.parametrize(
    ("name", "field", "raw", "expected"),
    [
        ("resize_image", "width", "64", 64),
        ("resize_image", "crop", "[0, 0, 10, 10]", [0, 0, 10, 10]),
        ("count", "duration", "2.5", 2.5),
        ("count", "duration", "3", 3.0),
        ("count", "length", "short", "short"),
        ("render_report", "title", "42", "42"),
        ("render_report", "job_ids", '["a", "b"]', ["a", "b"]),
        ("some_long_function", "some_input", "[1, 2]", "[1, 2]"),
        ("send_email", "to", '["a@example.com"]', ["a@example.com"]),
        ("send_email", "to", "a@example.com", "a@example.com"),
    ],
    ids=[
        "int",
        "list",
        "float",
        "int-text-for-float",
        "optional-str",
        "str-stays-str",
        "optional-list",
        "any-stays-text",
        "list-for-str-or-list",
        "str-for-str-or-list",
    ],
)
def test_coerce_form_value_converts_to_the_parameter_type(
    name: str, field: str, raw: str, expected: Any
) -> None:
    value = registry.get(name).coerce_form_value(field, raw)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), (" True ", True), ("false", False), ("0", False), ("FALSE", False)],
)
def test_coerce_form_value_reads_bool_words(raw: str, expected: bool) -> None:
    assert private_function().coerce_form_value("verbose", raw) is expected


@pytest.mark.parametrize(
    ("name", "field", "raw"),
    [
        ("resize_image", "width", "wide"),
        ("resize_image", "width", "6.5"),
        ("count", "duration", "soon"),
        ("resize_image", "crop", "[0, 0"),
        ("flags", "verbose", "maybe"),
    ],
)
def test_coerce_form_value_refuses_text_that_does_not_convert(name: str, field: str, raw: str) -> None:
    function = private_function() if name == "flags" else registry.get(name)

    with pytest.raises(ArgumentsError, match=f"form field '{field}'"):
        function.coerce_form_value(field, raw)
