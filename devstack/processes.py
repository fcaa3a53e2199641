"""Child processes in their own process groups, with logs on disk and readiness checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


class ProcessFailed(RuntimeError):
    """A child exited or never became ready; the message carries the tail of its log."""


class ManagedProcess:
    """One child process; `stop()` ends its whole process group (workers fork children)."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.popen: subprocess.Popen | None = None
        self.log_offset = 0

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # Logs are appended across runs; readiness checks read only what this run wrote.
        self.log_offset = log.tell()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0, what: str = "ready") -> None:
        """Polls `ready` until true; raises ProcessFailed with the log if the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessFailed(f"{self.name} exited before it was {what}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: S110 (not up yet: connection refused, TLS not ready, and so on)
                pass
            time.sleep(0.1)
        raise ProcessFailed(f"{self.name} was not {what} after {timeout:.0f} s:\n{self.log_tail()}")

    def signal_group(self, signum: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL if it lingers."""
        if self.popen is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(5)
        # Children of the group (a worker's pool) may outlive the leader; make sure they go too.
        self.signal_group(signal.SIGKILL)


def tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def http_ok(url: str, context=None) -> bool:
    """True when the server answers at all with less than a 500 (a 404 counts: it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return 200 <= response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
