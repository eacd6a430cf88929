# The job server's image: gunicorn by default; the same image runs workers and the dashboard.
#   docker build -t rq-job-server .
#   docker run -p 5000:5000 -e REDIS_URL=redis://my-redis:6379/0 rq-job-server
#   docker compose up --scale worker=3

# Stage 1: turn Pipfile.lock into a hashed requirements file, so pipenv stays out of the image.
FROM python:3.11-slim AS requirements

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIPENV_VERBOSITY=-1

# The pipenv the Makefile uses.
RUN pip install pipenv==2026.10.3

WORKDIR /src
COPY Pipfile Pipfile.lock ./
# Fail the build when Pipfile.lock is out of date with the Pipfile (like `pipenv install --deploy`);
# then export the default packages only, each pinned with its hashes.
RUN pipenv verify \
    && pipenv requirements --hash > requirements.txt

# Stage 2: the runtime image.
FROM python:3.11-slim

ENV APP_ENV=production \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# --require-hashes: install exactly the locked files, or fail.
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code belongs to root and stays read-only for the user that runs it. Writable: instance/
# (LOG_FILE=instance/app.log, for one; instance/metrics, the Prometheus files gunicorn and the
# workers share) and the home, where gunicorn puts its control socket.
RUN groupadd --system app \
    && useradd --system --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app
WORKDIR /app
COPY app/ app/
COPY gunicorn.conf.py worker.sh Procfile ./
RUN chmod 0755 worker.sh \
    && python -m compileall -q app \
    && mkdir -p instance/metrics \
    && chown -R app:app instance

USER app

EXPOSE 5000

# The web server answers GET /health without touching Redis. Workers and the dashboard, which run
# this image with another command, replace this check (see docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5000'), timeout=4)"

CMD ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:app"]
