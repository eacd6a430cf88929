"""rq-dashboard, mounted at /rq inside the app."""

from __future__ import annotations

import rq_dashboard
from flask import Flask
from rq_dashboard.web import config as dashboard_config
from rq_dashboard.web import setup_rq_connection

from app.queue import SERIALIZER, get_redis

URL_PREFIX = "/rq"


def init_app(app: Flask) -> None:
    """Mount the dashboard at /rq, reading jobs with the app's serializer and Redis."""
    if not app.config["DASHBOARD_ENABLED"]:
        return
    dashboard_config.serializer = SERIALIZER
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    setup_rq_connection(app)
    with app.app_context():
        # rq-dashboard keeps its connection on the app; make it the app's own.
        app.redis_conn = get_redis()  # type: ignore[attr-defined]
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
