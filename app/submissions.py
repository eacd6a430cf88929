"""What a client posts to /enqueue, read and checked before anything is queued."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flask import Request
from werkzeug.utils import secure_filename

from app.errors import APIError
from app.jobs.registry import ArgumentsError, FileData, JobFunction, UnknownFunction, registry

BODY_KEYS = {"function", "args", "kwargs", "queue", "timeout", "result_ttl"}


@dataclass
class Submission:
    """A checked request to run a registered function."""

    function: JobFunction
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    timeout: int = 600
    result_ttl: int = 86400


def read_submission(request: Request, config: dict[str, Any]) -> Submission:
    """Read a JSON or multipart body into a Submission; raise APIError when it is not valid."""
    if request.is_json:
        body = _json_body(request)
        if isinstance(body, dict) and "function" in body:
            return _from_fields(body, config)
        # The seed format: any other JSON body goes whole to the default function.
        return _from_fields({"function": config["DEFAULT_FUNCTION"], "args": [body]}, config)
    if request.mimetype == "multipart/form-data":
        return _from_form(request, config)
    raise APIError(
        415,
        "unsupported_media_type",
        "Send a JSON body (Content-Type: application/json) or multipart/form-data.",
    )


def _json_body(request: Request) -> Any:
    data = request.get_data(cache=True)
    if not data.strip():
        raise APIError(400, "empty_body", "The request body is empty; send a JSON document.")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise APIError(400, "invalid_json", f"The body is not valid JSON: {error}") from None


def _from_fields(body: dict[str, Any], config: dict[str, Any]) -> Submission:
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise APIError(
            422, "unknown_fields", f"Unknown field(s): {', '.join(unknown)}.", allowed=sorted(BODY_KEYS)
        )
    function = lookup(body["function"])
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise APIError(422, "invalid_arguments", "args must be a JSON array.")
    if not isinstance(kwargs, dict):
        raise APIError(422, "invalid_arguments", "kwargs must be a JSON object.")
    try:
        function.check_arguments(args, kwargs)
    except ArgumentsError as error:
        raise APIError(
            422, "invalid_arguments", f"{function.name}: {error}.", function=function.describe()
        ) from None
    return Submission(
        function=function,
        args=args,
        kwargs=kwargs,
        queue=_queue(body.get("queue", function.queue or config["DEFAULT_QUEUE"]), config),
        timeout=_bounded(
            "timeout",
            body.get("timeout", function.timeout or config["JOB_TIMEOUT"]),
            1,
            config["MAX_JOB_TIMEOUT"],
        ),
        result_ttl=_bounded(
            "result_ttl", body.get("result_ttl", config["RESULT_TTL"]), 0, config["MAX_RESULT_TTL"]
        ),
    )


def _from_form(request: Request, config: dict[str, Any]) -> Submission:
    form = request.form
    if "function" not in form:
        raise APIError(422, "missing_function", "A multipart body needs a 'function' field.")
    function = lookup(form["function"])
    body: dict[str, Any] = {"function": function.name}
    kwargs: dict[str, Any] = {}
    for name in form:
        raw = form[name]
        if name in ("args", "kwargs"):
            body[name] = _json_field(name, raw)
        elif name in ("timeout", "result_ttl"):
            body[name] = _int_field(name, raw)
        elif name in ("queue", "function"):
            body[name] = raw
        else:
            try:
                kwargs[name] = function.coerce_form_value(name, raw)
            except ArgumentsError as error:
                raise APIError(422, "invalid_arguments", f"{function.name}: {error}.") from None
    file_parameters = function.file_parameters
    for name, upload in request.files.items():
        if name not in file_parameters:
            raise APIError(
                422,
                "unexpected_file",
                f"{function.name} takes no file named {name!r}.",
                file_parameters=file_parameters,
            )
        # The client's filename is never used as a path; it is only echoed, sanitised.
        kwargs[name] = FileData(
            data=upload.read(),
            content_type=upload.mimetype or "application/octet-stream",
            filename=secure_filename(upload.filename or "") or "upload",
        ).to_json()
    if kwargs:
        if not isinstance(body.setdefault("kwargs", {}), dict):
            raise APIError(422, "invalid_arguments", "kwargs must be a JSON object.")
        body["kwargs"] = {**body["kwargs"], **kwargs}
    return _from_fields(body, config)


def lookup(name: Any) -> JobFunction:
    """Return the registered function; 422 naming the available ones otherwise."""
    if not isinstance(name, str):
        raise APIError(422, "invalid_function", "function must be a string.", available=registry.names())
    try:
        return registry.get(name)
    except UnknownFunction:
        raise APIError(
            422, "unknown_function", f"No function named {name!r} is registered.", available=registry.names()
        ) from None


def _queue(name: Any, config: dict[str, Any]) -> str:
    if name not in config["QUEUES"]:
        raise APIError(
            422,
            "invalid_queue",
            f"queue must be one of {', '.join(config['QUEUES'])}.",
            queues=list(config["QUEUES"]),
        )
    return str(name)


def _bounded(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(422, f"invalid_{name}", f"{name} must be an integer from {low} to {high}.")
    return value


def _json_field(name: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise APIError(422, "invalid_arguments", f"The {name!r} form field must be JSON.") from None


def _int_field(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise APIError(422, f"invalid_{name}", f"{name} must be an integer.") from None
