"""The installed `certwright-edge` script (bootstrap installs the project into .venv): its help, and
bad input answered in words with exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "certwright-edge"


def run(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=30)


@pytest.mark.skipif(not SCRIPT.exists(), reason="run bash devstack/bootstrap.sh to install the script")
def test_the_installed_script_documents_its_commands_drivers_and_options(tmp_path):
    top = run("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert "run " in top.stdout and "status " in top.stdout
    helped = run("run", "--help", cwd=tmp_path)
    assert helped.returncode == 0
    for option in ("--url", "--token-file", "--store", "--driver", "--files-dir", "--caddy-listen"):
        assert option in helped.stdout
    for option in ("--haproxy-socket", "--haproxy-crt-list", "--haproxy-cert-dir", "--log-file"):
        assert option in helped.stdout
    assert "CERTWRIGHT_EDGE_TOKEN" in helped.stdout
    assert "_wildcard.example.com.pem" in helped.stdout


@pytest.mark.skipif(not SCRIPT.exists(), reason="run bash devstack/bootstrap.sh to install the script")
@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--url", "ftp://x", "--driver", "files"],
            {"CERTWRIGHT_EDGE_TOKEN": "t"},
            "--url must be an http://",
        ),
        (["--url", "http://127.0.0.1:9", "--driver", "files"], {}, "no token: give --token-file"),
        (
            ["--url", "http://127.0.0.1:9", "--driver", "files"],
            {"CERTWRIGHT_EDGE_TOKEN": "t"},
            "needs --files-dir",
        ),
        (
            ["--url", "http://127.0.0.1:9", "--driver", "haproxy"],
            {"CERTWRIGHT_EDGE_TOKEN": "t"},
            "--haproxy-socket",
        ),
        (
            ["--url", "http://127.0.0.1:9", "--driver", "caddy", "--caddy-listen", "nowhere"],
            {"CERTWRIGHT_EDGE_TOKEN": "t"},
            "--caddy-listen must be HOST:PORT",
        ),
        (
            [
                "--url",
                "http://127.0.0.1:9",
                "--driver",
                "files",
                "--files-dir",
                "f",
                "--token-file",
                "missing",
            ],
            {},
            "cannot read the token file missing",
        ),
    ],
)
def test_bad_options_are_refused_in_words(tmp_path, argv, env, message):
    result = run(
        "run", "--store", str(tmp_path / "store"), *argv, env={"PATH": "/usr/bin", **env}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_status_of_a_missing_store_says_so(tmp_path):
    result = run("status", "--store", str(tmp_path / "none"))
    assert result.returncode == 1
    assert "is not a directory (no store there)" in result.stderr
