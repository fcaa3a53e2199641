"""A PostgreSQL server of the edge benchmark's own: initdb in a temporary directory, on a free port,
so its outage step can stop and start it without touching the machine's shared server on 5432.

initdb and postgres refuse to run as root: as root they run as the `postgres` user, which then owns
the data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

USER = "postgres"


def _bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that holds initdb."""
    versions = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise SystemExit("VOID: no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin")
    return versions[-1].parent


class PrivatePostgres:
    """initdb, start, stop (the outage), start again, and remove; trust authentication on
    `host` (127.0.0.1 unless told) and from `trusted_network` only, fsync off (a benchmark's
    throwaway cluster)."""

    def __init__(self, host: str = "127.0.0.1", trusted_network: str = "") -> None:
        from devstack.ports import free_port  # the repository is on sys.path once _harness is imported

        self.bin = _bin_dir()
        self.host = host
        self.trusted_network = trusted_network
        self.port = free_port(host)
        self.directory = Path(tempfile.mkdtemp(prefix="certwright-bench-edge-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.running = False

    def _as_postgres(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        command = argv if os.geteuid() != 0 else ["runuser", "-u", USER, "--", *argv]
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd="/")

    def url(self, database: str) -> str:
        return f"postgres://{USER}@{self.host}:{self.port}/{database}"

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.directory, USER, USER)
        self.directory.chmod(0o700)
        try:
            self._as_postgres(
                [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", USER, "-E", "UTF8"]
            )
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"VOID: initdb failed: {exc.stderr.strip()[-500:]}") from None
        if self.trusted_network:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.trusted_network} trust\n")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={self.host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=256MB"
        )
        result = self._as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"VOID: PostgreSQL did not start: {result.stderr.strip()}\n{self.log_tail()}")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected), as an operator's stop or a crash looks to them."""
        if not self.data.exists():
            return
        self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], check=False
        )
        self.running = False

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def remove(self) -> None:
        """Stops the server (if it runs) and deletes its directory."""
        self.stop()
        deadline = time.monotonic() + 10
        while self.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.directory, ignore_errors=True)
