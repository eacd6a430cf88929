"""gunicorn settings: `gunicorn --config gunicorn.conf.py app.wsgi:app`."""

import os
from typing import Any

from app import metrics
from app.config import load_environment

load_environment()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not sync workers: a live-update stream (Server-Sent Events) holds its thread for
# as long as it is open, and a sync worker would be held with it, blocking every other request.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Requests only talk to Redis (bounded by REDIS_SOCKET_TIMEOUT); long work runs in jobs.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
# gunicorn's lines in the app's LOG_FORMAT, each access line with its request's X-Request-ID.
logger_class = "app.gunicorn_log.GunicornLogger"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus metrics: every worker process (and the RQ workers of this machine) keeps its
# counters in PROMETHEUS_MULTIPROC_DIR (default instance/metrics), which /metrics adds up.
metrics.use_multiprocess()


def child_exit(server: object, worker: Any) -> None:
    """Drop the live gauges of a worker process that exited."""
    metrics.mark_process_dead(worker.pid)
