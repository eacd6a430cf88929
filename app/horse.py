"""A long-lived work horse: a child process that runs one job after another for its worker.

RQ's forking worker forks a new work horse for every job, which costs a fork and a new Redis
connection per job. The fast worker (app.worker.FastWorker) forks one horse and sends it
jobs over a socket pair instead: the job still runs in another process, so a job that crashes
(a segfault, os._exit, the OOM killer) takes down only the horse, and the worker forks a new
one.

Messages are bytes with a 4-byte length in front (Channel); nothing is pickled. The horse
reads a request, answers with the bytes `run(request)` returned, and exits when its worker
closes the socket.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time
import warnings
from collections.abc import Callable
from contextlib import suppress

HEADER = struct.Struct(">I")


class HorseDied(Exception):
    """The work horse exited (or was killed) before it answered."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        super().__init__(describe_exit(status))


def describe_exit(status: int | None) -> str:
    """Return how a process ended, from its wait status: "exit status 1", "signal 9 (SIGKILL)"."""
    if status is None:
        return "unknown exit"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"signal {number} ({signal.Signals(number).name})"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Channel:
    """One end of a socket pair that carries whole messages: a 4-byte length, then the bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send_bytes(self, message: bytes) -> None:
        """Send one message (raise OSError when the other end is gone)."""
        self.sock.sendall(HEADER.pack(len(message)) + message)

    def recv_bytes(self) -> bytes:
        """Return the next message; raise EOFError when the other end has closed."""
        (length,) = HEADER.unpack(self._read(HEADER.size))
        return self._read(length)

    def poll(self, timeout: float) -> bool:
        """Tell whether a message (or the end of the stream) arrives within `timeout` seconds."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def close(self) -> None:
        """Close this end: the other end reads end of file."""
        self.sock.close()

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError("the other end closed the channel")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def channel_pair() -> tuple[Channel, Channel]:
    """Return the two ends of a new channel."""
    one, other = socket.socketpair()
    return Channel(one), Channel(other)


class WorkHorse:
    """One child process, forked from the worker, that answers requests until it is closed."""

    def __init__(self, run: Callable[[bytes], bytes]) -> None:
        self.run = run
        self.pid = 0
        self._connection: Channel | None = None
        self.status: int | None = None

    def start(self) -> WorkHorse:
        """Fork the horse; return self in the worker."""
        ours, theirs = channel_pair()
        with warnings.catch_warnings():
            # After a crash the worker forks again while RQ's command listener thread runs. The
            # horse never uses that thread; logging re-creates its locks in a forked child, and
            # redis-py's pools open new connections when they see a new pid.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
            ours.close()
            self._serve(theirs)
        theirs.close()
        # The child makes itself a group leader too; whichever runs first, kill() reaches the
        # group from now on, even before the child has run a line.
        with suppress(OSError):
            os.setpgid(pid, pid)
        self.pid, self._connection, self.status = pid, ours, None
        return self

    def _serve(self, connection: Channel) -> None:
        """The horse's loop: answer each request; exit when the worker hangs up."""
        # Its own process group, and deaf to Ctrl-C: a terminal's SIGINT goes to the worker,
        # which lets the running job finish (RQ's work horse does the same).
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = 0
        try:
            while True:
                try:
                    request = connection.recv_bytes()
                except EOFError:
                    break
                connection.send_bytes(self.run(request))
        except BaseException:  # the worker sees the exit and fails the job
            code = 1
        os._exit(code)

    @property
    def running(self) -> bool:
        """Tell whether the horse process is still there (reaping it if it has exited)."""
        if not self.pid or self.status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.status = status
        return False

    def send(self, request: bytes) -> None:
        """Hand the horse a request; raise HorseDied if it is gone."""
        assert self._connection is not None, "start() the horse first"
        try:
            self._connection.send_bytes(request)
        except OSError:
            raise HorseDied(self.reap()) from None

    def poll(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the answer (or the horse's death); tell whether one came."""
        assert self._connection is not None, "start() the horse first"
        return self._connection.poll(timeout)

    def receive(self) -> bytes:
        """Return the horse's answer; raise HorseDied if it died instead of answering."""
        assert self._connection is not None, "start() the horse first"
        try:
            return self._connection.recv_bytes()
        except (EOFError, OSError):
            raise HorseDied(self.reap()) from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send the horse (and anything it started in its group) a signal, if it is still there."""
        if self.pid and self.status is None:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def reap(self) -> int | None:
        """Wait for the horse to exit; return its wait status."""
        if self.pid and self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return self.status

    def close(self, timeout: float = 5.0) -> None:
        """Let the horse exit (it sees end of file); kill it if it has not within `timeout`."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if not self.pid or self.status is not None:
            return
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.running:
            self.kill()
        self.reap()
