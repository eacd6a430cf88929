"""Settings for the `rq` command line and rq-dashboard: `rq worker --config app.rqconfig`.

`rq-dashboard --config app.rqconfig --json` reads the RQ_DASHBOARD_* settings below.
"""

from app.config import build_config
from app.queue import dashboard_settings, sentinel_settings, worker_retry_options

_settings = build_config()

QUEUES = list(_settings["QUEUES"])

if _settings["REDIS_SENTINELS"]:
    _sentinel = sentinel_settings(_settings)
    # Without REDIS_URL, RQ connects through the Sentinels (rq.cli.helpers.get_redis_from_config).
    # It ignores --connection-class there: the workers' retries go in the connection options.
    REDIS_URL: str | None = None
    SENTINEL = {
        "INSTANCES": _sentinel.addresses,
        "MASTER_NAME": _sentinel.master,
        "SENTINEL_KWARGS": _sentinel.sentinel_options,
        "CONNECTION_KWARGS": {**_sentinel.master_options, **worker_retry_options()},
    }
else:
    REDIS_URL = _settings["REDIS_URL"]

# For `rq-dashboard --config app.rqconfig`: the URL, and the passwords when it names Sentinels.
_dashboard = dashboard_settings(_settings)
RQ_DASHBOARD_REDIS_URL = _dashboard["RQ_DASHBOARD_REDIS_URL"]
RQ_DASHBOARD_REDIS_PASSWORD = _dashboard.get("RQ_DASHBOARD_REDIS_PASSWORD")
RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD = _dashboard.get("RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD")
