"""A crash while handling an upload: the API's 500 is JSON without internals, and Django's error
reports (the DEBUG 500 page, the admins' e-mail) show no key, passphrase, sealed key or token, by
whatever name the code held them."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.test import override_settings
from django.utils.log import AdminEmailHandler

import api.views
from tests.api.conftest import API

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
PASSPHRASE = "correct horse battery staple"


class ServiceCrashed(Exception):
    pass


@pytest.fixture
def crashing_upload(alice_api, shop, upload, monkeypatch):
    """Posts a domain with an encrypted key to a service that crashes holding it, and the sealed key
    and token under names no filter knows; returns what must not show and the response."""
    fields = upload("www.example.com", passphrase=PASSPHRASE)
    sealed = Fernet(Fernet.generate_key()).encrypt(fields["tlskey"].encode()).decode()
    token = alice_api.token

    def add_domain(app, name, *, letsencrypt, cert, key, passphrase, profile="", issuer=""):
        stored = sealed  # noqa: F841 (a frame variable the report would show)
        caller = f"Bearer {token}"  # noqa: F841
        raise ServiceCrashed(f"could not add {name} for {token}")

    monkeypatch.setattr(api.views, "add_domain", add_domain)
    alice_api.raise_request_exception = False
    key_lines = fields["tlskey"].splitlines()
    cert_lines = fields["tlscert"].splitlines()
    secrets = {
        "a private key marker": "PRIVATE KEY-----",
        "a line of the key": key_lines[len(key_lines) // 2],
        "a line of the certificate": cert_lines[len(cert_lines) // 2],
        "the passphrase": PASSPHRASE,
        "the sealed key": sealed[:40],
        "the token": token,
        "the token's secret part": token[len("cwt_") + 12 :],
    }

    def post():
        return alice_api.post(DOMAINS, {"name": "www.example.com", **fields}, format="json")

    return secrets, post


def shown(secrets: dict[str, str], text: str) -> list[str]:
    return [what for what, secret in secrets.items() if secret in text]


def test_the_apis_500_is_json_without_internals(crashing_upload):
    secrets, post = crashing_upload

    response = post()

    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: the request failed on the server and was logged"}
    assert shown(secrets, response.content.decode()) == []


@override_settings(DEBUG=True, EXAMPLE_SERVICE_URL="redis://ops:hunter2-in-a-url@127.0.0.1:1/0")
def test_the_debug_500_page_of_a_crashed_upload_shows_no_key_passphrase_or_token(crashing_upload):
    secrets, post = crashing_upload
    secrets["a password in a URL setting"] = "hunter2-in-a-url"

    response = post()

    page = response.content.decode()
    assert response.status_code == 500
    # Django's technical page, with the frames and their variables: there is something to search.
    assert "ServiceCrashed at /api/v1/apps/shop/domains" in page
    assert "could not add www.example.com for ********************" in page
    assert "Local vars" in page
    assert shown(secrets, page) == []


@pytest.fixture
def html_error_emails():
    """The admins' error e-mails with the HTML page attached too (AdminEmailHandler's
    include_html), besides the project's plain ones."""
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


@override_settings(ADMINS=[("Ops", "ops@example.com")])
def test_the_error_emails_of_a_crashed_upload_show_no_key_passphrase_or_token(
    crashing_upload, html_error_emails
):
    secrets, post = crashing_upload

    post()

    plain, with_html = sorted(mail.outbox, key=lambda email: len(email.alternatives))
    [(html, _)] = with_html.alternatives
    assert "could not add www.example.com for ********************" in plain.body
    assert "Local Vars" in html  # the frames and their variables
    for text in (plain.body, with_html.body, html):
        assert shown(secrets, text) == []
