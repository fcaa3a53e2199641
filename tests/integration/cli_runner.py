"""The `certwright` CLI as a customer runs it: a subprocess against the test web server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class Cli:
    """Runs `python -m cli --app APP ...` as a subprocess against the test web server."""

    def __init__(self, app_name: str, token: str):
        port = os.environ["CERTWRIGHT_TEST_HTTP01_PORT"]
        self.app_name = app_name
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
            "CERTWRIGHT_API_URL": f"http://127.0.0.1:{port}",
            "CERTWRIGHT_API_TOKEN": token,
        }

    def __call__(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        env = self.env if token is None else {**self.env, "CERTWRIGHT_API_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "cli", "--app", self.app_name, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (
            f"certwright {' '.join(args)}: exit {result.returncode}: {result.stderr}"
        )
        return result.stdout

    def domain(self, name: str) -> dict:
        return json.loads(self.ok("domains-show", name, "--json"))
