"""A Flask + RQ job server: clients enqueue registered functions and follow them over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

__version__ = "0.1.0"


def create_app(
    config: Mapping[str, Any] | None = None, *, connection: Redis | None = None, serving: bool = True
) -> Flask:
    """Build the app: config for APP_ENV (or `config["APP_ENV"]`), then Redis, routes, handlers.

    Workers build it with serving=False: the routes jobs link to (the API's and the page's,
    for url_for) and nothing else. The other routes, rq-dashboard, the OpenAPI document and
    the command line would only weigh on every worker's memory.
    """
    from app import api, auth, errors, log, queue, web
    from app.config import build_config
    from app.response import Response

    app = Flask(__name__, instance_relative_config=True)
    app.response_class = Response
    app.config.update(build_config(config))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    log.init_app(app)
    queue.init_app(app, connection)
    errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(web.bp)
    if serving:
        from app import cli, control, dashboard, events, health, listing, metrics, monitor, openapi

        app.register_blueprint(listing.bp)
        app.register_blueprint(control.bp)
        app.register_blueprint(monitor.bp)
        app.register_blueprint(health.bp)
        app.register_blueprint(openapi.bp)
        app.register_blueprint(events.bp)
        metrics.init_app(app)
        cli.init_app(app)
        dashboard.init_app(app)
    if app.config["PROXY_COUNT"]:
        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_port=count)  # type: ignore[method-assign]
    return app
