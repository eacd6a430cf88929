"""The registry of job functions: the only functions a client can enqueue."""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context

from app.retry import RetryPolicy

# The one key of the JSON object that stands for a file, in arguments and in results.
FILE_KEY = "$file"


@dataclass(frozen=True)
class FileData:
    """A file passed to or returned by a job; it travels through Redis as base64 JSON."""

    data: bytes
    content_type: str = "application/octet-stream"
    filename: str = "file"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in Redis."""
        return {
            FILE_KEY: {
                "filename": self.filename,
                "content_type": self.content_type,
                "base64": base64.b64encode(self.data).decode("ascii"),
            }
        }

    @classmethod
    def from_json(cls, value: Any) -> FileData:
        """Read the JSON form back; raise ValueError when it is not one."""
        if not is_file_json(value):
            raise ValueError(f'expected a file: {{"{FILE_KEY}": {{"base64": ...}}}}')
        fields = value[FILE_KEY]
        try:
            data = base64.b64decode(fields["base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ValueError("the file's base64 data is not valid base64") from None
        return cls(
            data=data,
            content_type=str(fields.get("content_type") or cls.content_type),
            filename=str(fields.get("filename") or cls.filename),
        )


def is_file_json(value: Any) -> bool:
    """Tell whether a JSON value is the stored form of a FileData."""
    return (
        isinstance(value, dict)
        and list(value) == [FILE_KEY]
        and isinstance(value[FILE_KEY], dict)
        and isinstance(value[FILE_KEY].get("base64"), str)
    )


class UnknownFunction(LookupError):
    """No function is registered under the requested name."""


class ArgumentsError(ValueError):
    """The arguments do not fit the function's signature or types."""


# JSON type names, for error messages and for /functions.
_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    FileData: "file",
    type(None): "null",
}


@dataclass(frozen=True)
class JobFunction:
    """A registered function: its public name, callable and per-function job settings."""

    name: str
    func: Callable[..., Any]
    queue: str | None = None
    timeout: int | None = None
    retry: RetryPolicy | None = None

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """Return the signature clients bind their arguments to."""
        return inspect.signature(self.func)

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        """Return the resolved type annotations of the parameters."""
        hints = typing.get_type_hints(self.func)
        hints.pop("return", None)
        return hints

    @property
    def doc(self) -> str:
        """Return the first line of the function's docstring."""
        return (inspect.getdoc(self.func) or "").split("\n", 1)[0]

    @property
    def file_parameters(self) -> list[str]:
        """Return the names of the parameters that take a file."""
        return [name for name, hint in self.hints.items() if FileData in _members(hint)]

    def describe(self) -> dict[str, Any]:
        """Return the function's public description, as /functions lists it."""
        parameters = []
        for param in self.signature.parameters.values():
            entry: dict[str, Any] = {"name": param.name, "kind": param.kind.name.lower()}
            if param.name in self.hints:
                entry["type"] = type_name(self.hints[param.name])
            entry["required"] = param.default is inspect.Parameter.empty and param.kind in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            )
            if param.default is not inspect.Parameter.empty:
                entry["default"] = param.default
            parameters.append(entry)
        description: dict[str, Any] = {"name": self.name, "doc": self.doc, "parameters": parameters}
        if self.retry is not None:
            description["retry"] = self.retry.to_json()
        return description

    def check_arguments(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Raise ArgumentsError unless the arguments bind to the signature with fitting types."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ArgumentsError(str(error)) from None
        for name, value in bound.arguments.items():
            param = self.signature.parameters[name]
            hint = self.hints.get(name)
            if hint is None:
                continue
            values = value if param.kind is inspect.Parameter.VAR_POSITIONAL else [value]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                values = list(value.values())
            for item in values:
                if not _fits(hint, item):
                    raise ArgumentsError(
                        f"argument {name!r} must be {type_name(hint)}, not {json_type(item)}"
                    )

    def coerce_form_value(self, name: str, raw: str) -> Any:
        """Convert a multipart form field to the parameter's type."""
        hint = self.hints.get(name)
        members = _members(hint) if hint is not None else set()
        try:
            if bool in members:
                return {"true": True, "1": True, "false": False, "0": False}[raw.strip().lower()]
            if int in members and float not in members:
                return int(raw)
            if float in members:
                return float(raw)
            if members & {list, dict}:
                value = json.loads(raw)
                if isinstance(value, list | dict) or str not in members:
                    return value
        except (KeyError, ValueError):
            if str in members:
                return raw
            raise ArgumentsError(f"form field {name!r} must be {type_name(hint)}, not {raw[:40]!r}") from None
        return raw


def _members(hint: Any) -> set[Any]:
    """Return the plain classes a type hint admits (`int | None` gives {int, NoneType})."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(_members(arg) for arg in typing.get_args(hint)))
    if origin is typing.Annotated:
        return _members(typing.get_args(hint)[0])
    if origin is not None:
        return {origin}
    return {hint}


def _fits(hint: Any, value: Any) -> bool:
    """Tell whether a JSON value fits a type hint; hints we cannot check admit anything."""
    members = _members(hint)
    if any(member not in _TYPE_NAMES for member in members):
        return True
    if isinstance(value, bool):
        return bool in members
    if isinstance(value, int) and float in members:
        return True
    if FileData in members and is_file_json(value):
        return True
    return any(isinstance(value, member) for member in members if member not in (FileData, bool))


def type_name(hint: Any) -> str:
    """Return the JSON name of a type hint, such as 'integer or null'."""
    names = [_TYPE_NAMES.get(member, getattr(member, "__name__", str(member))) for member in _members(hint)]
    return " or ".join(sorted(names, key=lambda name: (name == "null", name)))


def json_type(value: Any) -> str:
    """Return the JSON type name of a value."""
    if is_file_json(value):
        return "file"
    for kind in (bool, int, float, str, list, dict, type(None)):
        if isinstance(value, kind):
            return _TYPE_NAMES[kind]
    return type(value).__name__


class Registry:
    """Public names mapped to job functions; nothing else can be enqueued."""

    def __init__(self) -> None:
        self._functions: dict[str, JobFunction] = {}

    def register(
        self,
        name: str | None = None,
        *,
        queue: str | None = None,
        timeout: int | None = None,
        retry: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function under a public name (its own name by default).

        `retry` is the function's default retry policy, in the shape /enqueue takes.
        """
        # A malformed default fails at import, not in a client's request.
        policy = RetryPolicy.from_json(retry) if retry is not None else None

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            public_name = name or func.__name__
            if public_name in self._functions:
                raise ValueError(f"a job function named {public_name!r} is already registered")
            runner = _file_aware(func)
            self._functions[public_name] = JobFunction(public_name, runner, queue, timeout, policy)
            return runner

        return decorator

    def get(self, name: str) -> JobFunction:
        """Return the function registered under a name, or raise UnknownFunction."""
        try:
            return self._functions[name]
        except KeyError:
            raise UnknownFunction(name) from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._functions)

    def __iter__(self) -> Iterator[JobFunction]:
        return iter(sorted(self._functions.values(), key=lambda function: function.name))


def _file_aware(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a job so that FileData goes in and out as JSON; RQ imports the wrapper by name."""
    signature = inspect.signature(func)
    file_params = [
        name
        for name, hint in typing.get_type_hints(func).items()
        if name != "return" and FileData in _members(hint)
    ]

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if file_params:
            bound = signature.bind(*args, **kwargs)
            for name in file_params:
                if is_file_json(bound.arguments.get(name)):
                    bound.arguments[name] = FileData.from_json(bound.arguments[name])
            args, kwargs = bound.args, bound.kwargs
        result = func(*args, **kwargs)
        if isinstance(result, FileData):
            result = result.to_json()
        check_result_size(result)
        return result

    return run


class ResultTooLarge(ValueError):
    """A job returned more than MAX_RESULT_BYTES: it fails instead of filling Redis."""


def check_result_size(result: Any) -> None:
    """Raise ResultTooLarge when the result's JSON is larger than the app's MAX_RESULT_BYTES."""
    if not has_app_context():
        return
    limit = current_app.config["MAX_RESULT_BYTES"]
    size = len(json.dumps(result))
    if size > limit:
        raise ResultTooLarge(f"the result is {size} bytes of JSON, more than MAX_RESULT_BYTES ({limit})")


# The application's registry: job modules register into it with `@registry.register()`.
registry = Registry()
