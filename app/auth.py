"""Who may do what: API keys with scopes, a per-key rate limit and a cross-origin guard."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request
from redis.exceptions import RedisError

from app.errors import APIError
from app.queue import get_redis

log = logging.getLogger(__name__)

SCOPES = ("read", "submit", "cancel", "admin")
EXTENSION = "auth"
OWNER_KEY = "owner"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Open to everyone, keys or not: what a client needs to find the API and what probes ask.
PUBLIC_ENDPOINTS = {"api.index", "health.health", "health.ready", "static"}
PUBLIC_BLUEPRINTS = {"openapi", "web"}
SCOPE_OF_ENDPOINT = {
    "api.enqueue": "submit",
    "control.cancel_job": "cancel",
    "control.requeue_job": "cancel",
    "control.delete_job": "cancel",
}
# Whole blueprints for operators only.
ADMIN_BLUEPRINTS = {"rq_dashboard", "metrics"}


@dataclass(frozen=True)
class ApiKey:
    """A configured key: its name, the SHA-256 of its secret, its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[str]
    own_jobs_only: bool = False

    def allows(self, scope: str) -> bool:
        """Tell whether the key grants the scope (admin grants every scope)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` per `seconds` per key (or per client address in open mode)."""

    requests: int
    seconds: int


def parse_keys(raw: str | list[dict[str, Any]]) -> tuple[ApiKey, ...]:
    """Read API_KEYS: a JSON list of {name, key or sha256, scopes, own_jobs_only}."""
    entries = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(entries, list):
        raise ValueError("API_KEYS must be a JSON list of keys")
    keys = []
    for number, entry in enumerate(entries):
        where = f"API_KEYS[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{where} must be an object with a name")
        if isinstance(entry.get("key"), str) and len(entry["key"]) >= 16:
            digest = hashlib.sha256(entry["key"].encode()).digest()
        elif isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64:
            digest = bytes.fromhex(entry["sha256"])
        else:
            raise ValueError(f"{where} needs a key of 16 or more characters, or its sha256 in hex")
        scopes = entry.get("scopes", [])
        if not isinstance(scopes, list) or not scopes or set(scopes) - set(SCOPES):
            raise ValueError(f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)}")
        keys.append(ApiKey(entry["name"], digest, frozenset(scopes), bool(entry.get("own_jobs_only"))))
    if len({key.name for key in keys}) != len(keys):
        raise ValueError("API_KEYS: every key needs a name of its own")
    return tuple(keys)


def parse_rate_limit(raw: str) -> RateLimit | None:
    """Read RATE_LIMIT, such as "120/60" (120 requests a minute); empty means none."""
    if not raw.strip():
        return None
    try:
        requests, seconds = (int(part) for part in raw.split("/"))
    except ValueError:
        raise ValueError(f"RATE_LIMIT must look like 120/60 (requests/seconds), not {raw!r}") from None
    if requests < 1 or seconds < 1:
        raise ValueError("RATE_LIMIT needs at least 1 request per at least 1 second")
    return RateLimit(requests, seconds)


def init_app(app: Flask) -> None:
    """Check every request's key, scope, rate and origin before its view runs."""
    keys = parse_keys(app.config["API_KEYS"])
    app.extensions[EXTENSION] = (keys, parse_rate_limit(app.config["RATE_LIMIT"]))
    if not keys and not app.testing:
        host = os.environ.get("HOST", "0.0.0.0")
        if _is_loopback(host):
            log.warning("No API_KEYS set: open mode, every client may do everything.")
        else:
            log.critical(
                "OPEN MODE on %s: no API_KEYS set, so anyone who reaches this server may enqueue, "
                "read, cancel and delete jobs. Set API_KEYS before exposing it.",
                host,
            )
    app.before_request(check_request)


def check_request() -> None:
    """Refuse cross-origin writes, unknown keys, missing scopes and clients over their rate."""
    keys, limit = current_app.extensions[EXTENSION]
    if request.method not in SAFE_METHODS:
        refuse_cross_origin()
    # Only GET / tells a browser from a script (by Accept): no need to parse it for other routes.
    endpoint = request.endpoint
    scope = required_scope(endpoint, request.method, html=endpoint == "api.index" and prefers_html())
    key = None
    if keys and scope is not None:
        key = authenticate(keys)
        if not key.allows(scope):
            raise APIError(403, "forbidden", f"The key {key.name!r} lacks the {scope!r} scope.", scope=scope)
    g.api_key = key
    if limit is not None and scope is not None:
        enforce_rate_limit(limit, key.name if key else request.remote_addr or "-")


def required_scope(endpoint: str | None, method: str, html: bool = False) -> str | None:
    """Return the scope a route needs, or None for public routes (unknown routes 404 anyway).

    `html`: the client is a browser asking for a page rather than for JSON.
    """
    if endpoint == "api.index" and html:
        # The page: its scripts then call the API with the login the browser keeps.
        return "read"
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None
    blueprint = endpoint.split(".", 1)[0] if "." in endpoint else ""
    if blueprint in PUBLIC_BLUEPRINTS:
        return None
    if blueprint in ADMIN_BLUEPRINTS:
        return "admin"
    if endpoint in SCOPE_OF_ENDPOINT:
        return SCOPE_OF_ENDPOINT[endpoint]
    # Anything else that changes state is for operators until it is given a scope of its own.
    return "read" if method in SAFE_METHODS else "admin"


def authenticate(keys: tuple[ApiKey, ...]) -> ApiKey:
    """Return the key the request presents; 401 without a valid one."""
    # Browsers only show a login prompt for Basic: offer it where people browse (the page, the
    # dashboard). Logged in, the browser sends the key with the page's own fetch() and
    # EventSource requests too, which cannot set headers themselves.
    browsing = request.blueprint == "rq_dashboard" or prefers_html()
    challenge = 'Basic realm="rq-job-server"' if browsing else "Bearer"
    secret = presented_secret()
    if secret is None:
        raise APIError(
            401, "unauthorized", "Send an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
        ).with_headers({"WWW-Authenticate": challenge})
    digest = hashlib.sha256(secret.encode()).digest()
    found = None
    # Compare with every key, in constant time, so timing tells nothing about which matched.
    for key in keys:
        if hmac.compare_digest(digest, key.digest):
            found = key
    if found is None:
        raise APIError(401, "unauthorized", "The API key is not valid.").with_headers(
            {"WWW-Authenticate": challenge}
        )
    return found


def presented_secret() -> str | None:
    """Return the key from X-API-Key, a Bearer token, or a Basic password (for browsers)."""
    if request.headers.get("X-API-Key"):
        return request.headers["X-API-Key"]
    authorization = request.authorization
    if authorization is None:
        return None
    if authorization.type == "bearer":
        return authorization.token
    if authorization.type == "basic":
        return authorization.password
    return None


def enforce_rate_limit(limit: RateLimit, client: str) -> None:
    """Count the request in this window; 429 with Retry-After past the limit."""
    now = time.time()
    window = int(now // limit.seconds)
    counter = f"rq-job-server:rate:{client}:{window}"
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, limit.seconds + 1)
            count = pipe.execute()[0]
    except RedisError:
        # The limiter must not be what takes the API down; the request meets Redis next anyway.
        return
    if count > limit.requests:
        retry_after = max(1, int((window + 1) * limit.seconds - now + 0.999))
        raise APIError(
            429,
            "rate_limited",
            f"More than {limit.requests} requests in {limit.seconds} s; try again in {retry_after} s.",
            retry_after=retry_after,
        ).with_headers({"Retry-After": str(retry_after)})


def refuse_cross_origin() -> None:
    """Refuse writes a browser sends on behalf of another site (CSRF); API clients send no Origin."""
    environ = request.environ  # read once: each request.headers.get() spells out the key anew
    if environ.get("HTTP_SEC_FETCH_SITE") == "cross-site":
        raise APIError(403, "cross_origin", "Requests from other sites may not change anything here.")
    origin = environ.get("HTTP_ORIGIN")
    if origin and origin != "null":
        allowed = current_app.config["ALLOWED_ORIGINS"]
        if urlsplit(origin).netloc != request.host and origin not in allowed:
            raise APIError(403, "cross_origin", f"Requests from {origin} may not change anything here.")
    elif origin == "null":
        raise APIError(403, "cross_origin", "Requests from opaque origins may not change anything here.")


def prefers_html() -> bool:
    """Tell whether the client is a browser navigating (it prefers HTML to JSON)."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def keys_configured() -> bool:
    """Tell whether API keys are set (else the server is in open mode)."""
    keys: tuple[ApiKey, ...] = current_app.extensions[EXTENSION][0]
    return bool(keys)


def current_owner() -> str | None:
    """Return the name jobs are recorded under for this request's key (None in open mode)."""
    key: ApiKey | None = g.get("api_key")
    return key.name if key else None


def restricted_owner() -> str | None:
    """Return the key's name when it may see only its own jobs, else None."""
    key: ApiKey | None = g.get("api_key")
    return key.name if key and key.own_jobs_only else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
