"""gunicorn settings: `gunicorn --config gunicorn.conf.py app.wsgi:app`."""

import os

from app.config import load_environment

load_environment()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
# Requests only talk to Redis (bounded by REDIS_SOCKET_TIMEOUT); long work runs in jobs.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
