"""The several-hosts run (bench/hosts.py), small: 20 domains over seven hosts in network namespaces,
a worker host killed, another cut off from PostgreSQL and Redis for 30 s, the beat leader's host
killed. Leases are shortened to 20 s so that the re-drive of the killed host's work comes within the
test's time; the run is otherwise the benchmark's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "cwtst"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


def _leftovers() -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return [line for line in (namespaces + links + rules).splitlines() if PREFIX in line]


def test_twenty_domains_are_issued_once_each_while_hosts_are_killed_and_cut_off_and_nothing_is_left():
    env = {key: value for key, value in os.environ.items() if not key.startswith("CERTWRIGHT_TEST")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.run(
        [
            sys.executable,
            "bench/hosts.py",
            "-n",
            "20",
            "--lease-seconds",
            "20",
            "--timeout",
            "240",
            "--prefix",
            PREFIX,
            "--subnet",
            "10.231.7.0/24",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    result = re.search(r"^RESULT (.*)$", run.stdout, re.M)
    assert result, run.stdout[-3000:] + run.stderr[-3000:]
    figures = dict(pair.split("=") for pair in result.group(1).split())
    assert figures["hosts"] == "7"
    assert figures["in_use"] == "20", run.stdout[-3000:]
    assert figures["pebble_certificates"] == "20", run.stdout[-3000:]
    assert figures["orders_placed_twice"] == "0", run.stdout[-3000:]
    assert figures["duplicates"] == "0", run.stdout[-3000:]
    assert figures["stuck"] == "0", run.stdout[-3000:]
    assert figures["max_recovery_s"] != "none", run.stdout[-3000:]
    assert run.returncode == 0
    assert "killed" in run.stdout and "healed after 30 s" in run.stdout
    assert "the standby beat took the leader lease" in run.stdout
    assert _leftovers() == []
