"""The OpenAPI 3.1 description of the API, served at /openapi.json, and its docs page at /docs.

The document is built from the code it describes: the registered functions (the enqueue
body's `function` and each one's arguments come from `JobFunction.describe()`), the queues
and bounds of the app's config, and the job statuses RQ knows. tests/test_openapi.py checks
it against app.url_map, the OpenAPI schema and real responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from app import __version__, auth
from app.jobs.registry import FILE_KEY, registry
from app.listing import STATUSES as JOB_STATUSES

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
# What the docs page may load: this server only (no CDN), Swagger UI's inline styles and
# its data: images; "Try it out" calls this server.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
# A 1x1 PNG: the example upload of a file argument works when tried out.
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """Return the OpenAPI description of this server."""
    return jsonify(describe_api(current_app, request.host_url.rstrip("/")))


@bp.get("/docs")
def docs() -> Response:
    """Render the OpenAPI description with Swagger UI, every asset served by this app."""
    response = Response(render_template("docs.html", service=current_app.config["SERVICE_NAME"]))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def ref(name: str) -> dict[str, str]:
    """Return a reference to a schema of the components."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Return the schema that also admits null."""
    return {"anyOf": [schema, {"type": "null"}]}


def json_content(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Return a `content` map with one application/json media type."""
    return {"application/json": {"schema": schema, **extra}}


def respond(description: str, schema: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """Return a response object: a JSON body (if any) and references to documented headers."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = json_content(schema)
    if headers:
        response["headers"] = {
            name: {"$ref": f"#/components/headers/{ref_}"} for name, ref_ in headers.items()
        }
    return response


def error(description: str) -> dict[str, Any]:
    """Return an error response: the one error body, the codes it may carry in its description."""
    return {"description": description, "content": json_content(ref("Error"))}


# Schemas of the job functions, from the registry's description --------------------------------

# The JSON types JobFunction.describe() names, as JSON Schemas.
_TYPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "array": {"type": "array"},
    "object": {"type": "object"},
    "null": {"type": "null"},
    "file": ref("FileArgument"),
}
# Placeholders of required arguments in the examples, most readable type first.
_PLACEHOLDERS: dict[str, Any] = {
    "string": "text",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "object": {},
    "array": [],
    "file": {FILE_KEY: {"base64": EXAMPLE_PNG, "filename": "pixel.png", "content_type": "image/png"}},
}


def parameter_schema(parameter: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON Schema of one parameter of a described function."""
    names = parameter.get("type", "").split(" or ")
    # A hint the server does not check (Any, a class of its own) admits any JSON value.
    if not all(name in _TYPE_SCHEMAS for name in names):
        schema: dict[str, Any] = {}
    elif len(names) == 1:
        schema = dict(_TYPE_SCHEMAS[names[0]])
    elif "file" not in names:
        schema = {"type": names}
    else:
        schema = {"anyOf": [_TYPE_SCHEMAS[name] for name in names]}
    if "default" in parameter:
        schema["default"] = parameter["default"]
    return schema


def kwargs_schema(description: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a function's `kwargs`: one property per parameter it takes by name."""
    parameters = description["parameters"]
    named = [p for p in parameters if p["kind"] in ("positional_or_keyword", "keyword_only")]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p["name"]: parameter_schema(p) for p in named},
        "additionalProperties": any(p["kind"] == "var_keyword" for p in parameters),
    }
    return schema


def args_schema(description: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a function's `args`: its positional parameters in order."""
    parameters = description["parameters"]
    positional = [p for p in parameters if p["kind"] in ("positional_only", "positional_or_keyword")]
    rest = [p for p in parameters if p["kind"] == "var_positional"]
    schema: dict[str, Any] = {"type": "array"}
    if positional:
        schema["prefixItems"] = [parameter_schema(p) for p in positional]
    schema["items"] = parameter_schema(rest[0]) if rest else False
    return schema


def example_kwargs(description: dict[str, Any]) -> dict[str, Any]:
    """Return example keyword arguments: defaults as they are, placeholders for required ones."""
    kwargs: dict[str, Any] = {}
    for parameter in description["parameters"]:
        if parameter["kind"] not in ("positional_or_keyword", "keyword_only"):
            continue
        if "default" in parameter:
            kwargs[parameter["name"]] = parameter["default"]
        elif parameter["required"]:
            names = parameter.get("type", "").split(" or ")
            known = [name for name in _PLACEHOLDERS if name in names]
            kwargs[parameter["name"]] = _PLACEHOLDERS[known[0]] if known else "hello"
    return kwargs


def enqueue_schema(description: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of an /enqueue JSON body for one function, its options included."""
    required = [
        p["name"] for p in description["parameters"] if p["required"] and p["kind"] != "positional_only"
    ]
    schema: dict[str, Any] = {
        "title": description["name"],
        "description": description["doc"],
        "type": "object",
        "required": ["function"],
        "properties": {
            "function": {"const": description["name"]},
            "args": args_schema(description),
            "kwargs": ref(f"{description['name']}.kwargs"),
        },
        "allOf": [ref("EnqueueOptions")],
        "unevaluatedProperties": False,
    }
    if required:
        # Without `args` the required parameters come by name; with it they may come by position.
        schema["if"] = {"not": {"required": ["args"]}}
        schema["then"] = {"required": ["kwargs"], "properties": {"kwargs": {"required": required}}}
    return schema


def function_schemas() -> dict[str, dict[str, Any]]:
    """Return, per registered function, its enqueue body's schema and its kwargs' schema."""
    schemas: dict[str, dict[str, Any]] = {}
    for function in registry:
        description = function.describe()
        schemas[f"{function.name}.enqueue"] = enqueue_schema(description)
        schemas[f"{function.name}.kwargs"] = kwargs_schema(description)
    return schemas


def enqueue_examples() -> dict[str, Any]:
    """Return an example /enqueue body per registered function, and one in the seed format."""
    examples: dict[str, Any] = {
        function.name: {
            "summary": function.doc or function.name,
            "value": {"function": function.name, "kwargs": example_kwargs(function.describe())},
        }
        for function in registry
    }
    examples["batch"] = {
        "summary": "A JSON array of bodies: every job is queued, or (one refused) none",
        "value": [
            {"function": "count", "kwargs": {"duration": 1}},
            {"function": "count", "kwargs": {"duration": 2}, "queue": "high", "delay": 60},
        ],
    }
    examples["seed format"] = {
        "summary": "No `function`: the whole body goes to DEFAULT_FUNCTION",
        "value": {"hello": "world"},
    }
    return examples


def form_schema() -> dict[str, Any]:
    """Return the schema of a multipart /enqueue body: options and one field per argument."""
    fields: dict[str, dict[str, Any]] = {}
    for function in registry:
        files = set(function.file_parameters)
        for parameter in function.describe()["parameters"]:
            name = parameter["name"]
            if name in files:
                field = {"type": "string", "format": "binary", "description": f"{function.name}: a file"}
            else:
                field = {"type": "string", "description": f"{function.name}: {parameter.get('type', 'any')}"}
            if name in fields:
                field["description"] = f"{fields[name]['description']}; {field['description']}"
                if fields[name].get("format") == "binary":
                    field["format"] = "binary"
            fields[name] = field
    return {
        "type": "object",
        "required": ["function"],
        "properties": {
            "function": {"type": "string", "enum": registry.names()},
            "args": {"type": "string", "description": "a JSON array"},
            "kwargs": {"type": "string", "description": "a JSON object"},
            "queue": {"type": "string"},
            "timeout": {"type": "integer"},
            "result_ttl": {"type": "integer"},
            "ttl": {"type": "integer"},
            "failure_ttl": {"type": "integer"},
            "retry": {"type": "string", "description": "JSON, as in a JSON body"},
            "delay": {"type": "number"},
            "at": {"type": "string", "format": "date-time"},
            "depends_on": {"type": "string", "description": "a JSON array of job ids"},
            "allow_failure": {"type": "string", "enum": ["true", "false"]},
            "job_id": {"type": "string"},
            **fields,
        },
    }


# Schemas of the API's own bodies ----------------------------------------------------------------


def option_schemas(config: dict[str, Any]) -> dict[str, Any]:
    """Return the /enqueue options every function takes, with the app's bounds."""

    def seconds(low: int, high: int, about: str) -> dict[str, Any]:
        return {"type": "integer", "minimum": low, "maximum": high, "description": about}

    return {
        "type": "object",
        "properties": {
            "queue": {
                "type": "string",
                "enum": list(config["QUEUES"]),
                "description": "Default: the function's queue, else DEFAULT_QUEUE.",
            },
            "timeout": seconds(1, config["MAX_JOB_TIMEOUT"], "Seconds the job may run."),
            "result_ttl": seconds(0, config["MAX_RESULT_TTL"], "Seconds the result is kept."),
            "ttl": nullable(
                seconds(1, config["MAX_JOB_TTL"], "Seconds the job may wait to start; then it is dropped.")
            ),
            "failure_ttl": seconds(1, config["MAX_FAILURE_TTL"], "Seconds a failed job is kept."),
            "retry": {
                "description": "Retries of a failed try; null for none. Default: the function's policy.",
                "anyOf": [ref("FixedRetry"), ref("BackoffRetry"), {"type": "null"}],
            },
            "delay": {
                "type": "number",
                "minimum": 0,
                "maximum": config["MAX_DELAY"],
                "description": "Seconds from now to run the job; not with `at`.",
            },
            "at": {
                "type": "string",
                "format": "date-time",
                "description": "When to run the job: ISO-8601 with a zone; not with `delay`.",
            },
            "depends_on": {
                "type": "array",
                "items": ref("JobId"),
                "maxItems": config["MAX_DEPENDENCIES"],
                "description": "Jobs this one waits for; not with `delay`/`at`.",
            },
            "allow_failure": {"type": "boolean", "description": "Run after `depends_on` even if one failed."},
            "job_id": {
                "allOf": [ref("JobId")],
                "description": "Your own id; posting it again replays that job.",
            },
        },
    }


def retry_schemas(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the two shapes of a retry policy."""
    retries = {"type": "integer", "minimum": 1, "maximum": config["MAX_RETRIES"]}
    wait = {"type": "integer", "minimum": 0, "maximum": config["MAX_RETRY_INTERVAL"]}
    return {
        "FixedRetry": {
            "type": "object",
            "required": ["max"],
            "properties": {
                "max": retries,
                "intervals": {"type": "array", "items": wait, "minItems": 1, "default": [0]},
            },
            "additionalProperties": False,
            "example": {"max": 3, "intervals": [10, 60]},
        },
        "BackoffRetry": {
            "type": "object",
            "required": ["max", "backoff"],
            "properties": {
                "max": retries,
                "backoff": {"const": "exponential"},
                "base": {**wait, "minimum": 1, "default": 1},
                "cap": nullable(wait),
                "jitter": {"type": "boolean", "default": True},
            },
            "additionalProperties": False,
            "example": {"max": 5, "backoff": "exponential", "base": 2, "cap": 300, "jitter": True},
        },
    }


def obj(
    properties: dict[str, Any], required: Iterable[str] = (), closed: bool = True, **more: Any
) -> dict[str, Any]:
    """Return an object schema: these properties, the required ones, no others when `closed`."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return {**schema, **more}


def array(items: dict[str, Any], **more: Any) -> dict[str, Any]:
    """Return an array schema."""
    return {"type": "array", "items": items, **more}


STRING: dict[str, Any] = {"type": "string"}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
URL: dict[str, Any] = {"type": "string", "format": "uri"}
WHEN: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
# What makes a JSON body (or each item of an array: a batch) a job rather than the seed format.
JOB_BODY: dict[str, Any] = {"type": "object", "required": ["function"]}
ENQUEUED_REQUIRED = ["job_id", "status", "function", "queue", "status_url", "result_url"]
# inspect's parameter kinds, as JobFunction.describe() names them.
PARAMETER_KINDS = [
    "positional_only",
    "positional_or_keyword",
    "var_positional",
    "keyword_only",
    "var_keyword",
]


def body_schemas(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the schemas of the bodies the API reads and answers with."""
    statuses = {"type": "string", "enum": JOB_STATUSES}
    job_fields = {
        "job_id": ref("JobId"),
        "status": statuses,
        "function": STRING,
        "queue": STRING,
        "enqueued_at": WHEN,
        "started_at": WHEN,
        "ended_at": WHEN,
        "progress": ref("Progress"),
        "attempt": {"type": "integer", "minimum": 1, "description": "1 for the first try."},
        "last_error": {"type": ["string", "null"], "description": "The error of the latest retried try."},
        "status_url": URL,
        "result_url": URL,
    }
    enqueued = {
        "job_id": ref("JobId"),
        "status": {
            "type": "string",
            "enum": [*JOB_STATUSES, "expired"],
            "description": "`expired`: a replayed request whose job is no longer kept.",
        },
        "function": {**STRING, "enum": registry.names()},
        "queue": {**STRING, "enum": list(config["QUEUES"])},
        "scheduled_for": {**STRING, "format": "date-time"},
        "depends_on": array(ref("JobId")),
        "status_url": URL,
        "result_url": URL,
    }
    return {
        "JobId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
        "FileArgument": obj(
            {
                FILE_KEY: obj(
                    {
                        "base64": {**STRING, "contentEncoding": "base64"},
                        "filename": STRING,
                        "content_type": STRING,
                    },
                    ["base64"],
                )
            },
            [FILE_KEY],
        ),
        "Error": obj(
            {
                "error": obj(
                    {
                        "status": {"type": "integer", "minimum": 400, "maximum": 599},
                        "code": {**STRING, "examples": ["unknown_function", "job_not_found"]},
                        "message": STRING,
                        # Details some errors add:
                        "available": array(STRING, description="Registered functions."),
                        "allowed": array(STRING, description="Fields or parameters allowed."),
                        "queues": array(STRING),
                        "statuses": array(STRING),
                        "requeueable": array(STRING),
                        "file_parameters": array(STRING),
                        "job_id": STRING,
                        "job_ids": array(STRING),
                        "job_status": statuses,
                        "cancel_url": URL,
                        "function": ref("Function"),
                        "error": {**STRING, "description": "The job's error."},
                        "traceback": STRING,
                        "scope": {**STRING, "enum": list(auth.SCOPES), "description": "The scope missing."},
                        "retry_after": {"type": "integer", "description": "Seconds to wait."},
                        "max": {"type": "number", "description": "The longest `wait`."},
                        "reasons": array(STRING, description="Why the server is not ready."),
                        "index": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "The batch item (0-based) the error is about.",
                        },
                        "max_batch_size": {"type": "integer", "description": "MAX_BATCH_SIZE."},
                        "checks": ref("ReadyChecks"),
                    },
                    ["status", "code", "message"],
                    closed=False,
                )
            },
            ["error"],
            example={
                "error": {
                    "status": 422,
                    "code": "unknown_function",
                    "message": "No function named 'nope' is registered.",
                    "available": registry.names(),
                }
            },
        ),
        "EnqueueOptions": option_schemas(config),
        **retry_schemas(config),
        "Enqueued": obj(
            enqueued,
            ENQUEUED_REQUIRED,
            example={
                "job_id": "5b0e6c8e-3f5e-4a8c-9d61-2f0b2f0c9a11",
                "status": "queued",
                "function": "count",
                "queue": "high",
                "status_url": "http://localhost:5000/check_status?job_id=5b0e6c8e-3f5e-4a8c-9d61-2f0b2f0c9a11",
                "result_url": "http://localhost:5000/get_result?job_id=5b0e6c8e-3f5e-4a8c-9d61-2f0b2f0c9a11",
            },
        ),
        "EnqueuedBatch": obj(
            {
                "jobs": array(
                    obj(
                        {
                            **enqueued,
                            "replayed": {
                                "const": True,
                                "description": "The item's job_id was posted before: its job as it is now.",
                            },
                        },
                        ENQUEUED_REQUIRED,
                    ),
                    minItems=1,
                    description="One answer per item of the batch, in its order.",
                )
            },
            ["jobs"],
        ),
        "Progress": {
            "anyOf": [
                obj(
                    {
                        "current": {"type": "number"},
                        "total": {"type": "number"},
                        "percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "message": {"type": ["string", "null"]},
                        "updated_at": {**STRING, "format": "date-time"},
                    },
                    ["current", "total", "percent"],
                    closed=False,
                ),
                {"type": "null"},
            ]
        },
        "Job": obj(
            {
                **job_fields,
                "scheduled_for": {**WHEN, "description": "A scheduled job (or retry): when it is due."},
                "depends_on": array(ref("JobId"), description="A deferred job: what it waits for."),
                "error": {**STRING, "description": "A failed, stopped or canceled job: why."},
                "traceback": {**STRING, "description": "When EXPOSE_TRACEBACKS is on."},
            },
            job_fields,
        ),
        "Result": obj(
            {
                "job_id": ref("JobId"),
                "status": {"const": "finished"},
                "result": {"description": "What the function returned: any JSON value."},
            },
            ["job_id", "status", "result"],
        ),
        "JobList": obj(
            {
                "total": COUNT,
                "page": {"type": "integer", "minimum": 1},
                "per_page": {"type": "integer", "minimum": 1},
                "pages": COUNT,
                "scan": {
                    "description": "Set when `total` counts the matches among the newest jobs only.",
                    "anyOf": [
                        obj(
                            {"scanned": COUNT, "limit": COUNT, "complete": {"type": "boolean"}},
                            ["scanned", "limit", "complete"],
                        ),
                        {"type": "null"},
                    ],
                },
                "jobs": array(ref("Job")),
            },
            ["total", "page", "per_page", "pages", "scan", "jobs"],
        ),
        "Deleted": obj(
            {"job_id": ref("JobId"), "deleted": {"const": True}, "job_status": statuses},
            ["job_id", "deleted", "job_status"],
        ),
        "Function": obj(
            {
                "name": STRING,
                "doc": STRING,
                "parameters": array(
                    obj(
                        {
                            "name": STRING,
                            "kind": {**STRING, "enum": PARAMETER_KINDS},
                            "type": {**STRING, "examples": ["integer", "string or null", "file"]},
                            "required": {"type": "boolean"},
                            "default": {},
                        },
                        ["name", "kind", "required"],
                    )
                ),
                "retry": {"anyOf": [ref("FixedRetry"), ref("BackoffRetry")]},
            },
            ["name", "doc", "parameters"],
        ),
        "Functions": obj({"functions": array(ref("Function"))}, ["functions"]),
        "Index": obj(
            {
                "service": STRING,
                "version": STRING,
                "links": {
                    "type": "object",
                    "description": "The routes a client uses; `{job_id}` marks where the id goes.",
                    "additionalProperties": {"type": ["string", "null"]},
                },
            },
            ["service", "version", "links"],
        ),
        "Health": obj(
            {"status": {"const": "ok"}, "service": STRING, "version": STRING},
            ["status", "service", "version"],
        ),
        "Ready": obj({"status": {"const": "ready"}, "checks": ref("ReadyChecks")}, ["status", "checks"]),
        "ReadyChecks": obj(
            {
                "redis": {**STRING, "enum": ["ok", "unreachable"]},
                "workers": {
                    "type": "object",
                    "additionalProperties": COUNT,
                    "description": "Live workers per queue.",
                },
                "schedulers": {**COUNT, "description": "Live periodic-job schedulers."},
            },
            closed=False,
        ),
        "Queues": obj(
            {
                "queues": array(
                    obj(
                        {
                            "name": STRING,
                            "length": COUNT,
                            "oldest_job_id": {"type": ["string", "null"]},
                            "oldest_job_age": {"type": ["number", "null"], "description": "Seconds."},
                            "registries": {
                                "type": "object",
                                "additionalProperties": COUNT,
                                "examples": [{"started": 2, "failed": 1}],
                            },
                        },
                        ["name", "length", "oldest_job_id", "oldest_job_age", "registries"],
                    )
                )
            },
            ["queues"],
        ),
        "Workers": obj(
            {
                "workers": array(
                    obj(
                        {
                            "name": STRING,
                            "hostname": {"type": ["string", "null"]},
                            "pid": {"type": ["integer", "null"]},
                            "state": {**STRING, "examples": ["idle", "busy", "suspended"]},
                            "queues": array(STRING),
                            "current_job_id": {"type": ["string", "null"]},
                            "last_heartbeat": WHEN,
                            "birth_date": WHEN,
                            "successful_job_count": COUNT,
                            "failed_job_count": COUNT,
                            "total_working_time": {"type": "number", "description": "Seconds."},
                        }
                    )
                )
            },
            ["workers"],
        ),
    }


# Paths --------------------------------------------------------------------------------------------

BAD_JOB_ID = "`missing_job_id`, `invalid_job_id`."
NOT_FOUND = "`job_not_found`: it never existed or has expired."


def job_id_query() -> dict[str, Any]:
    """Return the job_id query parameter."""
    return {"name": "job_id", "in": "query", "required": True, "schema": ref("JobId")}


def job_id_path() -> dict[str, Any]:
    """Return the job id path parameter of /jobs/{job_id}."""
    return {"name": "job_id", "in": "path", "required": True, "schema": ref("JobId")}


def operation(
    operation_id: str, summary: str, tag: str, responses: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """Return an operation; any status it does not list answers with the error body."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        **more,
        "responses": {**responses, "default": {"$ref": "#/components/responses/Error"}},
    }


def listing_parameters(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the query parameters of GET /jobs (and of its event stream, GET /events)."""
    return [
        {
            "name": "status",
            "in": "query",
            "description": "Comma-separated or repeated; default all.",
            "style": "form",
            "explode": True,
            "schema": {"type": "array", "items": {"type": "string", "enum": JOB_STATUSES}},
        },
        {
            "name": "queue",
            "in": "query",
            "description": "Comma-separated or repeated; default all.",
            "style": "form",
            "explode": True,
            "schema": {
                "type": "array",
                "items": {"type": "string", "enum": list(config["QUEUES"])},
            },
        },
        {
            "name": "function",
            "in": "query",
            "description": "Only this function's jobs (reads at most JOBS_SCAN_LIMIT jobs).",
            "schema": {"type": "string", "enum": registry.names()},
        },
        {
            "name": "page",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "default": 1},
        },
        {
            "name": "per_page",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": config["MAX_JOBS_PER_PAGE"],
                "default": config["JOBS_PER_PAGE"],
            },
        },
    ]


def wait_query(config: dict[str, Any], what: str) -> dict[str, Any]:
    """Return the ?wait= long-poll parameter."""
    return {
        "name": "wait",
        "in": "query",
        "description": f"{what}, for at most this many seconds (default 0: answer at once).",
        "schema": {"type": "number", "minimum": 0, "maximum": config["MAX_WAIT"], "default": 0},
    }


def event_stream(events: str) -> dict[str, Any]:
    """Return a 200 response that is a stream of Server-Sent Events, each one's data a JSON line."""
    return {
        "description": f"A `text/event-stream`. Events: {events}",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }


def api_paths(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the documented routes: path, then method, then operation."""
    functions = registry.names()
    statuses = ", ".join(f"`{status}`" for status in JOB_STATUSES)
    running = respond(
        "The job has not ended yet; ask again after Retry-After.", ref("Job"), **{"Retry-After": "RetryAfter"}
    )
    return {
        "/": {
            "get": operation(
                "index",
                "The service's name, version and the routes a client uses",
                "service",
                {
                    "200": {
                        "description": "The service as JSON; a browser (Accept prefers text/html) gets "
                        "the page that submits and watches jobs.",
                        "headers": {"Vary": {"schema": {"type": "string", "const": "Accept"}}},
                        "content": {
                            **json_content(ref("Index")),
                            "text/html": {"schema": {"type": "string"}},
                        },
                    }
                },
            )
        },
        "/functions": {
            "get": operation(
                "functions",
                "The registered functions with their parameters and one-line docs",
                "service",
                {"200": respond("The functions, by name.", ref("Functions"))},
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This OpenAPI description",
                "service",
                {"200": respond("An OpenAPI 3.1 document.", {"type": "object"})},
            )
        },
        "/docs": {
            "get": operation(
                "docs",
                "The API's docs page (Swagger UI, served by this server)",
                "service",
                {
                    "200": {
                        "description": "An HTML page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/enqueue": {
            "post": operation(
                "enqueue",
                "Queue, schedule or chain a registered function, or a batch of them",
                "jobs",
                {
                    "202": respond(
                        "Accepted (or replayed: `Idempotent-Replayed: true`): the job; for a batch, "
                        "`jobs`, one per item in order (no Location).",
                        {"oneOf": [ref("Enqueued"), ref("EnqueuedBatch")]},
                        Location="Location",
                        **{"Idempotent-Replayed": "IdempotentReplayed"},
                    ),
                    "400": error("`empty_body`, `invalid_json`, `invalid_idempotency_key`."),
                    "409": error(
                        "`idempotency_conflict`: the key or job_id was used for another request; "
                        "`idempotency_in_progress` (with Retry-After). In a batch, with the item's `index`."
                    ),
                    "413": error(
                        "`request_entity_too_large`: the body is larger than MAX_CONTENT_LENGTH; "
                        "`batch_too_large`: more jobs than MAX_BATCH_SIZE (`max_batch_size`)."
                    ),
                    "415": error("`unsupported_media_type`: neither JSON nor multipart."),
                    "422": error(
                        "`unknown_function` (lists `available`), `invalid_function`, `invalid_arguments`, "
                        "`unknown_fields`, `missing_function`, `unexpected_file`, `invalid_queue`, "
                        "`invalid_timeout`, `invalid_result_ttl`, `invalid_ttl`, `invalid_failure_ttl`, "
                        "`invalid_retry`, `invalid_delay`, `invalid_at`, `invalid_schedule`, "
                        "`invalid_depends_on`, `invalid_allow_failure`, `invalid_job_id`, "
                        "`unknown_dependency`, `dependency_failed`. A batch: `empty_batch`, "
                        "`duplicate_job_id`, `idempotency_key_not_supported`, and any of these for an "
                        "item, with its `index` (0-based); then no job is created."
                    ),
                },
                description=(
                    "A JSON body names a registered `function` (one of "
                    + ", ".join(f"`{name}`" for name in functions)
                    + ") with its `args`/`kwargs` and options. A JSON array of such bodies is a batch "
                    "(up to MAX_BATCH_SIZE): all its jobs are created, or none if one is refused; its "
                    "items may not depend on each other, nor carry an Idempotency-Key (give each a "
                    "`job_id`). Any other JSON body goes whole to DEFAULT_FUNCTION (the seed format). "
                    "A multipart body has a `function` field, one field per argument and the file in "
                    "the field its parameter names."
                ),
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "1-255 printable ASCII characters: one job per key. Not with a batch.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": ref("EnqueueRequest"),
                            "examples": enqueue_examples(),
                        },
                        "multipart/form-data": {"schema": ref("EnqueueForm")},
                    },
                },
            )
        },
        "/check_status": {
            "get": operation(
                "check_status",
                "The job's status, timing, progress and error",
                "jobs",
                {
                    "200": respond(f"The job; `status` is one of {statuses}.", ref("Job")),
                    "400": error(f"{BAD_JOB_ID} `invalid_wait`: not a number."),
                    "404": error(NOT_FOUND),
                    "422": error("`invalid_wait`: out of range (the body says `max`)."),
                },
                parameters=[
                    job_id_query(),
                    wait_query(config, "Hold the answer until the job's status or progress changes"),
                ],
            )
        },
        "/get_result": {
            "get": operation(
                "get_result",
                "The job's result",
                "jobs",
                {
                    "200": {
                        "description": "Finished: its result as JSON, or a file result with its own "
                        "content type (`image/png`, `text/html`).",
                        "content": {
                            **json_content(ref("Result")),
                            "*/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "202": running,
                    "400": error(f"{BAD_JOB_ID} `invalid_wait`: not a number."),
                    "404": error(NOT_FOUND),
                    "422": error("`invalid_wait`: out of range (the body says `max`)."),
                    "409": error(
                        "The job ended without a result: `job_failed`, `job_stopped`, `job_canceled`, "
                        "with `error`."
                    ),
                },
                parameters=[job_id_query(), wait_query(config, "Hold the answer until the job has ended")],
            )
        },
        "/jobs": {
            "get": operation(
                "list_jobs",
                "List jobs, grouped by status then queue, newest first, one page at a time",
                "jobs",
                {
                    "200": respond("One page of jobs.", ref("JobList")),
                    "400": error("`invalid_page`, `invalid_per_page`: not a whole number."),
                    "422": error(
                        "`unknown_parameters`, `invalid_status`, `invalid_queue`, `unknown_function`, "
                        "`invalid_page` (< 1), `invalid_per_page` (out of bounds)."
                    ),
                },
                parameters=listing_parameters(config),
            )
        },
        "/jobs/{job_id}": {
            "parameters": [job_id_path()],
            "get": operation(
                "show_job",
                "The job's status body, as /check_status",
                "jobs",
                {"200": respond("The job.", ref("Job")), "400": error(BAD_JOB_ID), "404": error(NOT_FOUND)},
            ),
            "delete": operation(
                "delete_job",
                "Delete a job that is not running, and its result",
                "jobs",
                {
                    "200": respond("Deleted.", ref("Deleted")),
                    "400": error(BAD_JOB_ID),
                    "404": error(NOT_FOUND),
                    "409": error("`job_running` (with `cancel_url`: cancel it first), `job_busy`."),
                },
            ),
        },
        "/jobs/{job_id}/cancel": {
            "parameters": [job_id_path()],
            "post": operation(
                "cancel_job",
                "Cancel a waiting job, or stop a running one",
                "jobs",
                {
                    "200": respond("Canceled (`canceled`) or stopped (`stopped`).", ref("Job")),
                    "202": respond(
                        "Asked to stop: still running after CANCEL_WAIT_SECONDS.",
                        ref("Job"),
                        **{"Retry-After": "RetryAfter"},
                    ),
                    "400": error(BAD_JOB_ID),
                    "404": error(NOT_FOUND),
                    "409": error("`job_already_ended` (with `job_status`), `job_not_running`, `job_busy`."),
                },
            ),
        },
        "/jobs/{job_id}/requeue": {
            "parameters": [job_id_path()],
            "post": operation(
                "requeue_job",
                "Put a failed, stopped or canceled job back on its queue",
                "jobs",
                {
                    "202": respond("Queued again.", ref("Job"), Location="Location"),
                    "400": error(BAD_JOB_ID),
                    "404": error(NOT_FOUND),
                    "409": error("`job_not_requeueable` (with `job_status` and `requeueable`)."),
                },
            ),
        },
        "/jobs/{job_id}/events": {
            "parameters": [job_id_path()],
            "get": operation(
                "job_events",
                "Server-Sent Events: the job's status body each time it changes",
                "jobs",
                {
                    "200": event_stream(
                        "`job` (data: the status body, as /check_status) each time the job changes; "
                        "`end` (`{job_id, status}`) once it has ended, and the stream closes; `gone` "
                        "when the job was deleted or expired; `unavailable` when Redis does not answer. "
                        "The stream closes after EVENTS_MAX_DURATION seconds at most: reconnect."
                    ),
                    "400": error(BAD_JOB_ID),
                    "404": error(NOT_FOUND),
                },
            ),
        },
        "/events": {
            "get": operation(
                "list_events",
                "Server-Sent Events: the job list (GET /jobs' body) each time it changes",
                "jobs",
                {
                    "200": event_stream(
                        "`jobs` (data: GET /jobs' body for the same query) each time the page changes; "
                        "`unavailable` when Redis does not answer. The stream closes after "
                        "EVENTS_MAX_DURATION seconds: reconnect."
                    ),
                    "400": error("`invalid_page`, `invalid_per_page`: not a whole number."),
                    "422": error("As GET /jobs."),
                },
                parameters=listing_parameters(config),
            )
        },
        "/health": {
            "get": operation(
                "health",
                "Liveness: the process serves requests (Redis is not asked)",
                "operations",
                {"200": respond("Alive.", ref("Health"))},
            )
        },
        "/ready": {
            "get": operation(
                "ready",
                "Readiness: Redis answers, every queue has a live worker, the scheduler runs",
                "operations",
                {
                    "200": respond("Ready: jobs can run.", ref("Ready")),
                    "503": {
                        **error("`not_ready`, with `reasons` and `checks`; or `redis_unavailable`."),
                        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    },
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics: requests, jobs, queues and workers",
                "operations",
                {
                    "200": {
                        "description": "The Prometheus text format; OpenMetrics when Accept asks for it.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            )
        },
        "/queues": {
            "get": operation(
                "queues",
                "Each queue's length, oldest job and registries' sizes",
                "operations",
                {"200": respond("The queues, in the order workers drain them.", ref("Queues"))},
            )
        },
        "/workers": {
            "get": operation(
                "workers",
                "The workers with their state, current job, heartbeat and job counts",
                "operations",
                {"200": respond("The workers.", ref("Workers"))},
            )
        },
    }


def openapi_path(rule: str) -> str:
    """Return a Flask rule as an OpenAPI path: /jobs/<job_id> is /jobs/{job_id}."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def secured(paths: dict[str, dict[str, Any]], app: Flask) -> dict[str, dict[str, Any]]:
    """Mark each operation with what app.auth asks of its route: nothing, or a key with a scope."""
    for rule in app.url_map.iter_rules():
        item = paths.get(openapi_path(rule.rule), {})
        for method in rule.methods or ():
            operation = item.get(method.lower())
            if operation is None:
                continue
            scope = auth.required_scope(rule.endpoint, method)
            if scope is None:
                operation["security"] = []
                continue
            # {}: in open mode (no API_KEYS) no key is needed.
            operation["security"] = [{"ApiKey": []}, {"Bearer": []}, {}]
            operation["x-scope"] = scope
            note = f"With API_KEYS set, it needs a key with the `{scope}` scope (or `admin`)."
            operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            responses = operation["responses"]
            default = responses.pop("default")
            for status, name in (("401", "Unauthorized"), ("403", "Forbidden"), ("429", "RateLimited")):
                responses.setdefault(status, {"$ref": f"#/components/responses/{name}"})
            responses["default"] = default
    return paths


def describe_api(app: Flask, server_url: str = "") -> dict[str, Any]:
    """Return the OpenAPI document of the app: its routes, bodies, responses and errors."""
    config = app.config
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": config["SERVICE_NAME"],
            "version": __version__,
            "summary": "Enqueue registered Python functions as RQ jobs and follow them over HTTP.",
            "description": (
                "JSON in, JSON out. Every non-2xx response has one body: "
                '`{"error": {"status", "code", "message", ...}}`. Wrong methods answer 405 with '
                "`Allow`; an unreachable Redis, 503 with `Retry-After`. Operators' dashboard: `/rq`."
            ),
        },
        "tags": [
            {"name": "jobs", "description": "Enqueue, follow and control jobs."},
            {"name": "operations", "description": "Health, readiness, metrics, queues and workers."},
            {"name": "service", "description": "The service and its description."},
        ],
        "paths": secured(api_paths(config), app),
        "components": {
            "schemas": {
                "EnqueueRequest": {
                    "description": "A registered function with its arguments and options; a batch of "
                    "them; or (seed format) any other JSON.",
                    "oneOf": [
                        ref("EnqueueJob"),
                        {
                            "title": "batch",
                            "type": "array",
                            "items": ref("EnqueueJob"),
                            "minItems": 1,
                            "maxItems": config["MAX_BATCH_SIZE"],
                            "description": "Every job is created, or none when one is refused. An "
                            "array with any job in it is a batch: every item must be one.",
                        },
                        {
                            "title": "seed format",
                            "not": {
                                "anyOf": [
                                    JOB_BODY,
                                    {"type": "array", "contains": JOB_BODY},
                                    {"type": "array", "maxItems": 0},
                                ]
                            },
                            "description": "Handed whole to DEFAULT_FUNCTION as its one argument.",
                        },
                    ],
                },
                "EnqueueJob": {
                    "description": "One job: a registered function with its arguments and options.",
                    "oneOf": [ref(f"{name}.enqueue") for name in registry.names()],
                },
                "EnqueueForm": form_schema(),
                **function_schemas(),
                **body_schemas(config),
            },
            "responses": {
                "Error": error(
                    "The error body: 404 unknown route, 405 wrong method (with Allow), 500, "
                    "503 Redis unreachable (with Retry-After)."
                ),
                "Unauthorized": {
                    **error("`unauthorized`: no API key, or not a valid one (only when API_KEYS is set)."),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
                },
                "Forbidden": error(
                    "`forbidden`: the key lacks the scope (named in `scope`); `cross_origin`: a write "
                    "a browser sent from another site."
                ),
                "RateLimited": {
                    **error("`rate_limited`: over RATE_LIMIT requests in its window."),
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                },
            },
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "A key of API_KEYS. Without API_KEYS (open mode) no key is needed.",
                },
                "Bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The same key as a Bearer token.",
                },
            },
            "headers": {
                "Location": {
                    "description": "The job's status URL.",
                    "schema": {"type": "string", "format": "uri"},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before asking again.",
                    "schema": {"type": "integer"},
                },
                "IdempotentReplayed": {
                    "description": "`true` when the request repeated an earlier one.",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
