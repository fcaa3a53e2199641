"""Every way in refuses a key whose key derivation is over a cap BEFORE anything derives: the upload checks
(with cryptography's loaders replaced by spies that fail the test when called), the admin, the
`domains-ssl` command, the CLI's local conversion, and the REST API under the real gunicorn, whose
workers keep answering HTTP-01 meanwhile."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from api.tokens import create_token
from certificates.custom import UploadRejected, check_upload
from certificates.models import Certificate
from cli.errors import UserError
from cli.files import Passphrase, build_upload
from tests.factories import AppFactory, DomainFactory
from tests.pki import Pki, der_to_pem, key_pem, pem_to_der, pfx_hiding_key, pfx_with_rounds, with_integer

DOMAIN = "www.example.com"
PASSPHRASE = "correct horse battery staple"
HUGE = 2**31 - 1
OVER_CAP = (
    "is encrypted with 2,147,483,647 PBKDF2 iterations; at most 2,000,000 are accepted: "
    "export it again with fewer (OpenSSL's default is 2,048)"
)
KEY_OVER_CAP = f"the private key {OVER_CAP}"


@pytest.fixture(scope="module")
def issued():
    pki = Pki("Derivation Caps Test")
    leaf, key = pki.leaf([DOMAIN])
    return pki, leaf, key


@pytest.fixture
def no_derivation(monkeypatch):
    """cryptography's key loaders, replaced by spies that fail the test if anything reaches them."""

    def spy(name):
        def called(*args, **kwargs):
            pytest.fail(f"{name} was called: the key derivation was entered")

        return called

    monkeypatch.setattr(serialization, "load_pem_private_key", spy("load_pem_private_key"))
    monkeypatch.setattr(serialization, "load_der_private_key", spy("load_der_private_key"))
    monkeypatch.setattr(pkcs12, "load_key_and_certificates", spy("pkcs12.load_key_and_certificates"))


def edited_pem_key(key) -> bytes:
    """The key encrypted as usual (2,048 PBKDF2 iterations), then the count edited to 2^31-1 in PEM."""
    der = with_integer(pem_to_der(key_pem(key, passphrase=PASSPHRASE)), 2048, HUGE)
    return der_to_pem(der, "ENCRYPTED PRIVATE KEY")


def rejection(*args, **kwargs) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        check_upload(*args, **kwargs)
    return caught.value


# --- the upload checks (API, admin and commands all go through them) --------------------------------------


def test_upload_of_a_pem_key_over_the_pbkdf2_cap_is_rejected_without_deriving(issued, no_derivation):
    pki, leaf, key = issued
    rejected = rejection(DOMAIN, pki.chain_pem(leaf), edited_pem_key(key), passphrase=PASSPHRASE)
    assert (str(rejected), rejected.field) == (KEY_OVER_CAP, "key")


def test_upload_of_a_der_key_over_the_pbkdf2_cap_is_rejected_without_deriving(issued, no_derivation):
    pki, leaf, key = issued
    der = with_integer(pem_to_der(key_pem(key, passphrase=PASSPHRASE)), 2048, HUGE)
    assert str(rejection(DOMAIN, pki.chain_pem(leaf), der, passphrase=PASSPHRASE)) == KEY_OVER_CAP


def test_upload_of_a_key_over_the_cap_in_the_certificate_file_is_rejected_without_deriving(
    issued, no_derivation
):
    pki, leaf, key = issued
    assert str(rejection(DOMAIN, pki.chain_pem(leaf) + edited_pem_key(key), passphrase=PASSPHRASE)) == (
        KEY_OVER_CAP
    )


def test_upload_of_a_pkcs12_file_with_mac_iterations_over_the_cap_is_rejected_without_deriving(
    issued, no_derivation
):
    pki, leaf, key = issued
    built = pfx_with_rounds(key, leaf, [pki.intermediate], PASSPHRASE, rounds=1234)
    rejected = rejection(DOMAIN, with_integer(built, 2048, HUGE), passphrase=PASSPHRASE)
    assert str(rejected) == (
        "the PKCS#12 file's integrity check (MAC) uses 2,147,483,647 iterations; at most 2,000,000 are "
        "accepted: export it again with fewer (OpenSSL's default is 2,048)"
    )
    # Without a passphrase too: OpenSSL would derive the MAC key for "no password" and "empty password".
    assert str(rejection(DOMAIN, with_integer(built, 2048, HUGE))) == str(rejected)


def test_upload_of_a_pkcs12_file_with_pbe_iterations_over_the_cap_is_rejected_without_deriving(
    issued, no_derivation
):
    pki, leaf, key = issued
    built = pfx_with_rounds(key, leaf, [pki.intermediate], PASSPHRASE, rounds=1234, legacy=True)
    assert str(rejection(DOMAIN, with_integer(built, 1234, HUGE), passphrase=PASSPHRASE)) == (
        "the PKCS#12 file's certificate section is encrypted with 2,147,483,647 PKCS#12 key-derivation "
        "iterations; at most 2,000,000 are accepted: export it again with fewer (OpenSSL's default is 2,048)"
    )


def test_upload_of_a_pkcs12_file_hiding_a_key_over_the_cap_in_its_encrypted_part_is_rejected(
    issued, no_derivation
):
    _, leaf, key = issued
    shrouded = with_integer(pem_to_der(key_pem(key, passphrase=PASSPHRASE)), 2048, HUGE)
    assert str(rejection(DOMAIN, pfx_hiding_key(leaf, shrouded, PASSPHRASE), passphrase=PASSPHRASE)) == (
        f"the PKCS#12 file's private key {OVER_CAP}"
    )


def test_upload_of_an_ordinary_pkcs12_file_opens_with_one_loader_call(trusted, monkeypatch):
    leaf, key = trusted.leaf([DOMAIN])
    calls = []
    original = pkcs12.load_key_and_certificates

    def counting(data, password, *args):
        calls.append(password)
        return original(data, password, *args)

    monkeypatch.setattr(pkcs12, "load_key_and_certificates", counting)
    built = pfx_with_rounds(key, leaf, [trusted.intermediate], PASSPHRASE, legacy=True)
    assert check_upload(DOMAIN, built, passphrase=PASSPHRASE).sans == [DOMAIN]
    assert calls == [PASSPHRASE.encode()]


# --- the admin and the management command -------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_upload_of_a_key_over_the_cap_shows_the_cap_and_stores_nothing(issued, admin_client):
    pki, leaf, key = issued
    domain = DomainFactory(name=DOMAIN)
    response = admin_client.post(
        reverse("admin:domains_domain_upload_certificate", args=[domain.pk]),
        {
            "certificate": SimpleUploadedFile("bundle.pem", pki.chain_pem(leaf)),
            "private_key": SimpleUploadedFile("key.pem", edited_pem_key(key)),
            "passphrase": PASSPHRASE,
        },
    )
    assert response.status_code == 200
    assert "2,147,483,647 PBKDF2 iterations; at most 2,000,000 are accepted" in response.content.decode()
    assert not Certificate.objects.filter(domain=domain).exists()


@pytest.mark.django_db
def test_domains_ssl_refuses_a_key_over_the_cap(issued, tmp_path):
    pki, leaf, key = issued
    domain = DomainFactory(name=DOMAIN)
    (tmp_path / "bundle.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(edited_pem_key(key))
    (tmp_path / "passphrase.txt").write_text(PASSPHRASE + "\n")
    with pytest.raises(CommandError, match="2,147,483,647 PBKDF2 iterations; at most 2,000,000 are accepted"):
        call_command(
            "domains-ssl",
            DOMAIN,
            cert=str(tmp_path / "bundle.pem"),
            key=str(tmp_path / "key.pem"),
            passphrase_file=str(tmp_path / "passphrase.txt"),
            stdout=io.StringIO(),
        )
    assert not Certificate.objects.filter(domain=domain).exists()


# --- the CLI's local conversion ----------------------------------------------------------------------------


def test_cli_refuses_locally_a_pem_key_over_the_cap(issued, tmp_path, no_derivation):
    pki, leaf, key = issued
    (tmp_path / "bundle.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(edited_pem_key(key))
    with pytest.raises(UserError) as caught:
        build_upload(
            str(tmp_path / "bundle.pem"), Passphrase(interactive=False), key=str(tmp_path / "key.pem")
        )
    assert str(caught.value) == f"{tmp_path / 'key.pem'}: {KEY_OVER_CAP}"


def test_cli_refuses_locally_a_der_key_over_the_cap(issued, tmp_path, no_derivation):
    pki, leaf, key = issued
    (tmp_path / "bundle.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "key.der").write_bytes(
        with_integer(pem_to_der(key_pem(key, passphrase=PASSPHRASE)), 2048, HUGE)
    )
    with pytest.raises(UserError, match="2,147,483,647 PBKDF2 iterations; at most 2,000,000 are accepted"):
        build_upload(
            str(tmp_path / "bundle.pem"), Passphrase(interactive=False), key=str(tmp_path / "key.der")
        )


def test_cli_refuses_locally_a_pkcs12_file_over_the_cap(issued, tmp_path, no_derivation):
    pki, leaf, key = issued
    built = pfx_with_rounds(key, leaf, [pki.intermediate], PASSPHRASE, rounds=1234)
    (tmp_path / "bundle.pfx").write_bytes(with_integer(built, 1234, HUGE))
    with pytest.raises(UserError) as caught:
        build_upload(str(tmp_path / "bundle.pfx"), Passphrase(interactive=False))
    assert (
        str(caught.value) == f"{tmp_path / 'bundle.pfx'}: the PKCS#12 file's certificate section {OVER_CAP}"
    )


# --- the REST API under the real gunicorn ----------------------------------------------------------------


def direct() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy between the test and its own server
    return session


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_api_answers_400_naming_the_cap_at_once_and_http01_is_answered_meanwhile(issued, web_server):
    pki, leaf, key = issued
    app = AppFactory()
    DomainFactory(app=app, name=DOMAIN)
    _, token = create_token(app.owner, "tests")
    base = f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}"
    fields = {
        "tlscert": pki.chain_pem(leaf).decode(),
        "tlskey": edited_pem_key(key).decode(),
        "tlskey_passphrase": PASSPHRASE,
    }
    answers: list[tuple[int, dict, float]] = []

    def upload() -> None:
        started = time.monotonic()
        response = direct().patch(
            f"{base}/api/v1/apps/{app.name}/domains/{DOMAIN}",
            json=fields,
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        answers.append((response.status_code, response.json(), time.monotonic() - started))

    # As many uploads as the server has workers: before the caps, they held every one of them.
    uploads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in uploads:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    challenge = direct().get(f"{base}/.well-known/acme-challenge/x", headers={"Host": DOMAIN}, timeout=10)
    challenge_seconds = time.monotonic() - started
    for thread in uploads:
        thread.join(timeout=30)

    assert challenge.status_code == 404
    assert challenge_seconds < 2
    assert [(status, body) for status, body, _ in answers] == [(400, {"tlskey": [KEY_OVER_CAP]})] * 2
    assert max(seconds for _, _, seconds in answers) < 2
