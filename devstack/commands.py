"""The command lines of Certwright's own processes, one definition for make run, tests and benchmarks."""

from __future__ import annotations

import sys


def web_command(bind: str, workers: int = 2, access_log: bool = True) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        bind,
        "--workers",
        str(workers),
    ]
    return [*argv, "--access-logfile", "-"] if access_log else argv


def feed_command(bind: str, workers: int = 1, access_log: bool = True) -> list[str]:
    """The feed service: the same Django project under gunicorn's ASGI worker, for the routers'
    long-poll and snapshot (one process holds thousands of waiting routers)."""
    argv = [sys.executable, "-m", "gunicorn", "config.asgi:application", "-k", "asgi"]
    argv += ["--bind", bind, "--workers", str(workers), "--graceful-timeout", "5"]
    return [*argv, "--access-logfile", "-"] if access_log else argv


def worker_command(
    name: str, queues: str = "dns,acme,default", log_level: str = "INFO", concurrency: int | None = None
) -> list[str]:
    """`celery worker`; concurrency defaults to the WORKER_CONCURRENCY setting."""
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-n", f"{name}@%h"]
    argv += ["--without-gossip", "--without-mingle", "-l", log_level]
    return [*argv, "--concurrency", str(concurrency)] if concurrency else argv


def beat_command(schedule_file: str, log_level: str = "INFO") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", log_level, "-s", schedule_file]


def flower_command(port: int, basic_auth: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "flower",
        f"--port={port}",
        f"--basic-auth={basic_auth}",
    ]
