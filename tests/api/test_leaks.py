"""No secret comes back out: a representative run of the API, with custom certificates and keys
(one encrypted), and every response body and log record checked for key material, sealed keys,
the API token and the passphrase."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from tests.api.conftest import API
from tests.factories import DomainFactory
from tests.pki import key_der, key_pem

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
PASSPHRASE = "tangerine-velvet-7318-passphrase"


class Recorder:
    """Makes requests and keeps every response body."""

    def __init__(self, client) -> None:
        self.client = client
        self.bodies: list[bytes] = []

    def __call__(self, method: str, path: str, body=None, **extra):
        if isinstance(body, dict):
            extra["format"] = "json"
        response = getattr(self.client, method)(path, body, **extra)
        self.bodies.append(response.content)
        return response


def test_no_response_or_log_record_holds_a_key_a_sealed_key_the_token_or_the_passphrase(
    alice_api, shop, trusted, caplog
):
    caplog.set_level(logging.DEBUG)
    www_leaf, www_key = trusted.leaf(["www.example.com"])
    api_leaf, api_key = trusted.leaf(["api.example.com"])
    new_leaf, new_key = trusted.leaf(["www.example.com"])
    _, stray_key = trusted.leaf(["www.example.com"])
    keys = [www_key, api_key, new_key, stray_key]
    encrypted = {
        "tlscert": trusted.chain_pem(www_leaf).decode(),
        "tlskey": key_pem(www_key, passphrase=PASSPHRASE).decode(),
        "tlskey_passphrase": PASSPHRASE,
    }
    plain = {"tlscert": trusted.chain_pem(api_leaf).decode(), "tlskey": key_pem(api_key, "sec1").decode()}
    replacement = {
        "tlscert": trusted.chain_pem(new_leaf).decode(),
        "tlskey": key_pem(new_key, passphrase=PASSPHRASE).decode(),
        "tlskey_passphrase": PASSPHRASE,
    }
    request = Recorder(alice_api)
    DomainFactory(app=shop, name="old.example.com")

    # Successes.
    assert request("post", DOMAINS, {"name": "www.example.com", **encrypted}).status_code == 201
    assert request("post", DOMAINS, {"name": "api.example.com", **plain}).status_code == 201
    assert request("get", f"{DOMAINS}/www.example.com").status_code == 200
    assert request("get", DOMAINS).status_code == 200
    assert request("get", f"{API}/apps/shop").status_code == 200
    assert request("patch", f"{DOMAINS}/www.example.com", replacement).status_code == 200
    assert request("patch", f"{DOMAINS}/api.example.com", {"letsencrypt": False}).status_code == 200
    assert request("get", f"{DOMAINS}/www.example.com/events").status_code == 200
    assert request("get", f"{DOMAINS}/api.example.com/events").status_code == 200
    assert request("delete", f"{DOMAINS}/api.example.com/certificate").status_code == 200
    # Errors, each carrying a key or the passphrase in the request.
    rejected = [
        {**encrypted, "name": "bad1.example.com", "tlskey_passphrase": PASSPHRASE + "-wrong"},
        {**encrypted, "name": "bad2.example.com", "tlskey_passphrase": ""},
        {**plain, "name": "bad3.example.com", "tlskey": key_pem(stray_key).decode()},
        {**plain, "name": "bad4.example.com", "tlscert": plain["tlskey"]},
        {"name": "bad5.example.com", "tlskey": plain["tlskey"], "tlskey_passphrase": PASSPHRASE},
        {**encrypted, "name": "www.example.com"},
        {**encrypted, "name": "192.0.2.1"},
    ]
    for body in rejected:
        assert request("post", DOMAINS, body).status_code in (400, 409)
    assert request("patch", f"{DOMAINS}/old.example.com", {**plain, "app": "elsewhere"}).status_code == 400
    assert request("patch", f"{DOMAINS}/old.example.com", {**encrypted}).status_code == 400
    malformed = json.dumps({"name": "bad6.example.com", **encrypted})[:-10]
    assert request("post", DOMAINS, malformed, content_type="application/json").status_code == 400
    oversized = json.dumps({**encrypted, "name": "bad7.example.com", "padding": "x" * 300_000})
    assert request("post", DOMAINS, oversized, content_type="application/json").status_code == 413
    # The browsable API renders errors too.
    html = request("post", DOMAINS, {**encrypted, "name": "bad8.example.com"}, HTTP_ACCEPT="text/html")
    assert html.status_code == 400
    assert b"<html" in html.content

    forbidden = [
        "PRIVATE KEY",
        "gAAAAA",
        alice_api.token,
        PASSPHRASE,
        *(base64.b64encode(key_der(key)).decode()[:40] for key in keys),
    ]
    logs = [
        "\n".join([record.getMessage(), repr(record.args), repr(record.__dict__), record.exc_text or ""])
        for record in caplog.records
    ]
    texts = [body.decode("utf-8", "replace") for body in request.bodies] + logs + [caplog.text]
    assert len(request.bodies) == 22
    # The capture works: the 4xx answers were logged.
    assert any(record.name == "django.request" for record in caplog.records)
    leaks = [(secret[:12], text[:200]) for text in texts for secret in forbidden if secret in text]
    assert leaks == []
