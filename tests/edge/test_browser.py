"""A real browser through the real edge: Pebble issues www.example.com to Certwright, the agent
(`certwright-edge run --driver haproxy`) follows Certwright's feed service into a real HAProxy, and headless
Chromium, trusting Pebble's root from its own NSS database, loads the page over HTTPS with that
certificate; a name Certwright serves nothing for fails the handshake in the browser too."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from api.routers import create_router_token
from tests.edge.browser import chromium, trusting_home
from tests.edge.conftest import RUN_DIR, wait_for
from tests.edge.haproxy_process import presented
from tests.integration.polling import issued

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NAME = "www.example.com"
UNSERVED = "nothing.example.org"


def test_chromium_loads_the_page_with_certwrights_certificate_and_fails_the_handshake_for_an_unserved_name(
    issuance_stack, challtestsrv, app, feed_server, start_agent, haproxy, pki, tmp_path
):
    _, port, options = haproxy
    _, certificate = issued(challtestsrv, app, NAME)
    # Pebble's root is new at every start of Pebble: read now, after it started.
    pebble_root = issuance_stack.root_pem()
    root_file = tmp_path / "pebble-root.pem"
    root_file.write_bytes(pebble_root)

    start_agent(feed_server.url, *options, token=create_router_token(f"browser-{uuid.uuid4().hex[:6]}"))
    wait_for(
        lambda: presented(port, NAME, root_file) == certificate.fingerprint_sha256,
        what=f"HAProxy serving the certificate Certwright stored for {NAME}",
    )
    assert presented(port, UNSERVED, root_file) is None

    names = {NAME: port, UNSERVED: port}
    home = trusting_home(tmp_path / "home", pebble_root)
    with chromium(home, names, RUN_DIR / "logs") as browser:
        page = browser.load(f"https://{NAME}/")
        assert page.error is None, page
        assert (page.url, page.protocol, page.secure_context) == (f"https://{NAME}/", "https:", True)
        assert "served by HAProxy over TLS" in page.text
        assert browser.certificate_sha256(f"https://{NAME}") == certificate.fingerprint_sha256

        page = browser.load(f"https://{UNSERVED}/")
        # HAProxy's strict-sni refuses the handshake with an unrecognized_name alert: a failed handshake,
        # not a refused connection (HAProxy is up) nor a certificate error (no certificate was shown).
        assert page.error == "net::ERR_SSL_UNRECOGNIZED_NAME_ALERT", page
        assert page.url.startswith("chrome-error://"), page
        assert page.error.removeprefix("net::") in page.text

    # The control: the same browser without Pebble's root in its NSS database refuses the certificate, so
    # the page above loaded because the trust was built from this Pebble's root, not by any leniency.
    other_root = pki.write_root(tmp_path / "other-root.pem")
    stranger = trusting_home(tmp_path / "stranger", Path(other_root).read_bytes())
    with chromium(stranger, names, RUN_DIR / "logs") as browser:
        page = browser.load(f"https://{NAME}/")
        # A certificate error is an interstitial page, not a failed navigation for chromedriver.
        assert page.url.startswith("chrome-error://"), page
        assert "ERR_CERT_AUTHORITY_INVALID" in page.text, page
        assert "served by HAProxy over TLS" not in page.text
