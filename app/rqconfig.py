"""Settings for the `rq` command line: `rq worker --config app.rqconfig`."""

from app.config import build_config

_settings = build_config()

REDIS_URL = _settings["REDIS_URL"]
QUEUES = list(_settings["QUEUES"])
