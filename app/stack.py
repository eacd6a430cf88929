"""`make run`: Redis (started if none is reachable), workers, gunicorn and the dashboard."""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from honcho import manager as honcho_manager
from honcho.environ import parse_procfile

from app.config import PROJECT_ROOT, Config, load_environment
from app.redis_server import RedisServer, is_local, is_reachable

INSTANCE = PROJECT_ROOT / "instance"


def main() -> int:
    """Run the whole stack in this terminal until Ctrl-C; return the exit status."""
    load_environment()
    port = int(os.environ.get("PORT", "5000"))
    redis_url = os.environ.get("REDIS_URL", Config.REDIS_URL)
    server = None
    if is_reachable(redis_url):
        print(f"Using the Redis at {redis_url}", flush=True)
    elif is_local(redis_url):
        redis_port = urlsplit(redis_url).port or 6379
        server = RedisServer(redis_port, INSTANCE / "redis").start()
        print(
            f"Started redis-server ({server.binary}) on port {redis_port}; data in {server.directory}",
            flush=True,
        )
    else:
        print(f"Redis at {redis_url} does not answer; start it or fix REDIS_URL.", file=sys.stderr)
        return 1
    # The processes run from this interpreter's environment (gunicorn, rq), activated or not.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "REDIS_URL": redis_url, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    # Workers finish their running job on SIGTERM; give them that long before SIGKILL.
    honcho_manager.KILL_WAIT = int(os.environ.get("STOP_TIMEOUT", "60"))
    manager = honcho_manager.Manager()
    procfile = parse_procfile((PROJECT_ROOT / "Procfile").read_text())
    for name, command in procfile.processes.items():
        manager.add_process(name, command, env=env, cwd=str(PROJECT_ROOT))
    threading.Thread(target=announce, args=(port,), daemon=True).start()
    try:
        manager.loop()
    finally:
        if server is not None:
            server.stop()
            print("Stopped redis-server", flush=True)
    return int(manager.returncode or 0)


def announce(port: int, timeout: float = 60.0) -> None:
    """Print the URLs once the web server answers."""
    base = f"http://localhost:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        return
    print(
        "\n"
        f"  Job server   {base}/\n"
        f"  Enqueue      POST {base}/enqueue\n"
        f"  Dashboard    {base}/rq\n"
        "  Stop         Ctrl-C\n",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
