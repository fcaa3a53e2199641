"""Custom certificates end to end: what is served when, how statuses and history follow, how they are
stored, and the ways in (services, management commands, admin)."""

from __future__ import annotations

import datetime
import hashlib
import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from certificates.custom import UploadRejected
from certificates.models import Certificate, CertificateSource, Order
from certificates.serving import (
    has_valid_custom_certificate,
    served_certificate,
    served_certificate_of,
)
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from domains.status import NOTHING_SERVED
from tests.factories import AppFactory, CertificateFactory, DomainFactory
from tests.pki import Pki, der, key_der, key_pem, pem, pfx
from workers.expiry import catch_up

pytestmark = pytest.mark.django_db

DOMAIN = "www.example.com"
PASSPHRASE = "correct horse battery staple"
SECOND = datetime.timedelta(seconds=1)
DAY = datetime.timedelta(days=1)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


def spki(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def in_use_domain(name: str = DOMAIN) -> tuple[Domain, Certificate]:
    """A domain served with its Let's Encrypt certificate (valid from a day ago for 90 days)."""
    domain = DomainFactory(name=name, status=DomainStatus.IN_USE)
    return domain, CertificateFactory(domain=domain, not_before=timezone.now() - DAY)


def transitions(domain: Domain) -> list[tuple[str, str]]:
    return list(domain.events.order_by("pk").values_list("from_status", "to_status"))


def custom_rows(domain: Domain):
    return Certificate.objects.filter(domain=domain, source=CertificateSource.CUSTOM)


def install(pki: Pki, domain: Domain, now: datetime.datetime, **leaf_options):
    """Uploads a fresh leaf for the domain (PEM bundle and PEM key); returns (leaf, stored row)."""
    leaf, key = pki.leaf([domain.name], **leaf_options)
    return leaf, install_custom_certificate(domain, pki.chain_pem(leaf), key=key_pem(key), now=now)


# --- serving and statuses ---------------------------------------------------------------------------------


def test_letsencrypt_certificate_is_served_the_second_the_custom_one_expires_and_the_tick_settles_status(
    trusted,
):
    now = timezone.now()
    domain, letsencrypt = in_use_domain()
    leaf, stored = install(trusted, domain, now, not_after=now + 2 * DAY)
    expiry = leaf.not_valid_after_utc
    domain.refresh_from_db()
    assert domain.status == DomainStatus.NOT_USED
    assert transitions(domain) == [(DomainStatus.IN_USE, DomainStatus.NOT_USED)]

    # Two questions in a row, nothing run between them: serving decides from validity alone.
    before = served_certificate(DOMAIN, now=expiry - SECOND)
    after = served_certificate(DOMAIN, now=expiry + SECOND)
    assert before.fingerprint_sha256 == fingerprint(leaf) == stored.fingerprint_sha256
    assert before.source == CertificateSource.CUSTOM
    assert after.pk == letsencrypt.pk
    assert has_valid_custom_certificate(domain.pk, expiry - SECOND)
    assert not has_valid_custom_certificate(domain.pk, expiry + SECOND)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.NOT_USED  # the status waits for the tick

    catch_up_result = catch_up(now=expiry + SECOND)
    domain.refresh_from_db()
    assert catch_up_result == 1
    assert domain.status == DomainStatus.IN_USE
    assert transitions(domain) == [
        (DomainStatus.IN_USE, DomainStatus.NOT_USED),
        (DomainStatus.NOT_USED, DomainStatus.IN_USE),
    ]
    reason = domain.events.order_by("pk").last().reason
    assert "custom certificate expired" in reason

    catch_up(now=expiry + 2 * SECOND)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE
    assert len(transitions(domain)) == 2


def test_catch_up_run_again_after_settling_reports_nothing_changed(trusted):
    now = timezone.now()
    domain, _ = in_use_domain()
    leaf, _ = install(trusted, domain, now, not_after=now + 2 * DAY)
    expiry = leaf.not_valid_after_utc
    assert catch_up(now=expiry + SECOND) == 1
    assert catch_up(now=expiry + 2 * SECOND) == 0


def test_with_letsencrypt_disabled_nothing_is_served_after_the_custom_expiry_and_the_tick_says_so(trusted):
    now = timezone.now()
    domain = create_domain(AppFactory(), DOMAIN, letsencrypt=False, now=now)
    # A Let's Encrypt certificate from before it was disabled: valid, but never served again.
    letsencrypt = CertificateFactory(domain=domain)
    leaf, stored = install(trusted, domain, now, not_after=now + 2 * DAY)
    expiry = leaf.not_valid_after_utc
    domain.refresh_from_db()
    assert domain.status == DomainStatus.DISABLED
    assert domain.last_error == ""

    assert served_certificate(DOMAIN, now=expiry - SECOND).pk == stored.pk
    assert letsencrypt.is_valid_at(expiry + SECOND)
    assert served_certificate(DOMAIN, now=expiry + SECOND) is None
    assert served_certificate_of(domain.pk, now=expiry + SECOND) is None

    assert catch_up(now=expiry + SECOND) == 1
    domain.refresh_from_db()
    assert domain.status == DomainStatus.DISABLED
    assert domain.last_error == NOTHING_SERVED


def test_upload_on_a_domain_failing_because_its_certificate_expired_moves_it_to_not_used(trusted):
    now = timezone.now()
    domain = DomainFactory(name=DOMAIN, status=DomainStatus.IN_USE)
    CertificateFactory(domain=domain, not_before=now - 90 * DAY, not_after=now - DAY)
    assert catch_up(now=now) == 1
    domain.refresh_from_db()
    assert domain.status == DomainStatus.FAILING
    assert "no valid certificate is served" in domain.last_error

    leaf, _ = install(trusted, domain, now)
    assert served_certificate(DOMAIN, now=now).fingerprint_sha256 == fingerprint(leaf)
    domain.refresh_from_db()
    assert (domain.status, domain.last_error) == (DomainStatus.NOT_USED, "")


def test_removing_the_custom_certificate_serves_letsencrypt_at_once_and_moves_to_in_use(trusted):
    now = timezone.now()
    domain, letsencrypt = in_use_domain()
    install(trusted, domain, now)
    assert served_certificate(DOMAIN, now=now).source == CertificateSource.CUSTOM

    assert remove_custom_certificate(domain, now=now) is True
    assert served_certificate(DOMAIN, now=now).pk == letsencrypt.pk
    assert not custom_rows(domain).exists()
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE
    assert transitions(domain) == [
        (DomainStatus.IN_USE, DomainStatus.NOT_USED),
        (DomainStatus.NOT_USED, DomainStatus.IN_USE),
    ]


def test_removing_when_there_is_no_custom_certificate_returns_false_and_changes_nothing():
    domain, letsencrypt = in_use_domain()
    assert remove_custom_certificate(domain) is False
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE
    assert transitions(domain) == []
    assert list(Certificate.objects.filter(domain=domain)) == [letsencrypt]


def test_uploading_again_replaces_the_previous_custom_certificate(trusted):
    now = timezone.now()
    domain, _ = in_use_domain()
    first, _ = install(trusted, domain, now)
    second, _ = install(trusted, domain, now)
    assert fingerprint(first) != fingerprint(second)
    assert list(custom_rows(domain).values_list("fingerprint_sha256", flat=True)) == [fingerprint(second)]
    assert served_certificate(DOMAIN, now=now).fingerprint_sha256 == fingerprint(second)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.NOT_USED
    assert transitions(domain) == [(DomainStatus.IN_USE, DomainStatus.NOT_USED)]


def test_rejected_upload_stores_nothing_and_leaves_status_and_history_alone(trusted):
    domain, letsencrypt = in_use_domain()
    leaf, _ = trusted.leaf([DOMAIN])
    _, other_key = trusted.leaf([DOMAIN])
    with pytest.raises(UploadRejected, match="the private key does not match the certificate"):
        install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(other_key))
    assert not custom_rows(domain).exists()
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE
    assert transitions(domain) == []
    assert served_certificate(DOMAIN).pk == letsencrypt.pk


def test_upload_on_a_pending_dns_domain_is_served_while_the_letsencrypt_flow_goes_on(trusted):
    now = timezone.now()
    domain = create_domain(AppFactory(), DOMAIN, now=now)
    claim, due = domain.claim_token, domain.next_attempt_at
    leaf, _ = install(trusted, domain, now)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING_DNS
    assert (domain.claim_token, domain.next_attempt_at) == (claim, due)
    assert transitions(domain) == [("", DomainStatus.PENDING_DNS)]
    assert served_certificate(DOMAIN, now=now).fingerprint_sha256 == fingerprint(leaf)


# --- storage ----------------------------------------------------------------------------------------------


def test_stored_chain_is_leaf_first_even_uploaded_reversed_and_the_key_is_sealed(trusted):
    domain, _ = in_use_domain()
    leaf, key = trusted.leaf([DOMAIN])
    stored = install_custom_certificate(domain, pem(trusted.intermediate, leaf), key=key_pem(key, "sec1"))

    stored = Certificate.objects.get(pk=stored.pk)
    chain = x509.load_pem_x509_certificates(stored.fullchain_pem.encode())
    assert [fingerprint(cert) for cert in chain] == [fingerprint(leaf), fingerprint(trusted.intermediate)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM certificates_certificate WHERE id = %s", [stored.pk])
        (column,) = cursor.fetchone()
    assert column.startswith("gAAAAA")  # a Fernet token
    assert "PRIVATE KEY" not in column
    revealed = serialization.load_pem_private_key(stored.private_key.reveal(), password=None)
    assert spki(revealed) == spki(key)


# --- wildcards --------------------------------------------------------------------------------------------


def test_wildcard_domain_certificate_is_served_for_one_label_below_only(trusted):
    now = timezone.now()
    domain = create_domain(AppFactory(), "*.example.com", now=now)
    leaf, _ = install(trusted, domain, now)

    served = served_certificate("www.example.com", now=now)
    assert served is not None
    assert served.fingerprint_sha256 == fingerprint(leaf)
    assert served_certificate("a.b.example.com", now=now) is None
    assert served_certificate("example.com", now=now) is None


# --- management commands ----------------------------------------------------------------------------------


def test_domains_ssl_installs_der_files_and_disable_removes_them(trusted, tmp_path):
    domain, letsencrypt = in_use_domain()
    leaf, key = trusted.leaf([DOMAIN])
    (tmp_path / "leaf.der").write_bytes(der(leaf))
    (tmp_path / "inter.der").write_bytes(der(trusted.intermediate))
    (tmp_path / "key.der").write_bytes(key_der(key))
    out = io.StringIO()
    call_command(
        "domains-ssl",
        DOMAIN,
        cert=str(tmp_path / "leaf.der"),
        chain=str(tmp_path / "inter.der"),
        key=str(tmp_path / "key.der"),
        stdout=out,
    )
    assert fingerprint(leaf) in out.getvalue()
    assert list(custom_rows(domain).values_list("fingerprint_sha256", flat=True)) == [fingerprint(leaf)]
    domain.refresh_from_db()
    assert domain.status == DomainStatus.NOT_USED

    call_command("domains-ssl", DOMAIN, disable=True, stdout=io.StringIO())
    assert not custom_rows(domain).exists()
    assert served_certificate(DOMAIN).pk == letsencrypt.pk
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE


def test_domains_ssl_installs_a_pkcs12_file_with_its_passphrase_file(trusted, tmp_path):
    domain, _ = in_use_domain()
    leaf, key = trusted.leaf([DOMAIN])
    (tmp_path / "bundle.pfx").write_bytes(pfx(key, leaf, [trusted.intermediate], passphrase=PASSPHRASE))
    (tmp_path / "passphrase.txt").write_text(PASSPHRASE + "\n")
    call_command(
        "domains-ssl",
        DOMAIN,
        cert=str(tmp_path / "bundle.pfx"),
        passphrase_file=str(tmp_path / "passphrase.txt"),
        stdout=io.StringIO(),
    )
    assert list(custom_rows(domain).values_list("fingerprint_sha256", flat=True)) == [fingerprint(leaf)]


def test_domains_ssl_with_a_wrong_passphrase_fails_with_the_reason_and_stores_nothing(trusted, tmp_path):
    domain, _ = in_use_domain()
    leaf, key = trusted.leaf([DOMAIN])
    (tmp_path / "bundle.pfx").write_bytes(pfx(key, leaf, [trusted.intermediate], passphrase=PASSPHRASE))
    (tmp_path / "passphrase.txt").write_text("not the passphrase\n")
    with pytest.raises(CommandError, match=r"^wrong passphrase for the PKCS#12 file$"):
        call_command(
            "domains-ssl",
            DOMAIN,
            cert=str(tmp_path / "bundle.pfx"),
            passphrase_file=str(tmp_path / "passphrase.txt"),
        )
    assert not custom_rows(domain).exists()


def test_domains_ssl_names_a_missing_file(trusted, tmp_path):
    domain, _ = in_use_domain()
    leaf, _ = trusted.leaf([DOMAIN])
    (tmp_path / "leaf.pem").write_bytes(trusted.chain_pem(leaf))
    missing = tmp_path / "nowhere.key"
    with pytest.raises(CommandError, match=f"cannot read the key file {missing}"):
        call_command("domains-ssl", DOMAIN, cert=str(tmp_path / "leaf.pem"), key=str(missing))
    assert not custom_rows(domain).exists()


def test_domains_add_without_letsencrypt_creates_a_disabled_domain_that_serves_nothing():
    app = AppFactory()
    out = io.StringIO()
    call_command("domains-add", "shop.example.com", app=app.name, no_letsencrypt=True, stdout=out)
    domain = Domain.objects.get(name="shop.example.com")
    assert domain.app == app
    assert domain.status == DomainStatus.DISABLED
    assert domain.letsencrypt_enabled is False
    assert domain.last_error == NOTHING_SERVED
    assert not Order.objects.filter(domain=domain).exists()
    assert NOTHING_SERVED in out.getvalue()


def test_domains_add_with_a_certificate_for_another_name_adds_no_domain(trusted, tmp_path):
    app = AppFactory()
    leaf, key = trusted.leaf(["other.example.com"])
    (tmp_path / "leaf.pem").write_bytes(trusted.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    with pytest.raises(CommandError, match=r"the certificate does not cover www\.example\.com"):
        call_command(
            "domains-add",
            DOMAIN,
            app=app.name,
            cert=str(tmp_path / "leaf.pem"),
            key=str(tmp_path / "key.pem"),
        )
    assert not Domain.objects.filter(name=DOMAIN).exists()
    assert not Certificate.objects.exists()


def test_domains_add_with_a_valid_certificate_adds_the_domain_and_serves_it(trusted, tmp_path):
    app = AppFactory()
    leaf, key = trusted.leaf([DOMAIN])
    (tmp_path / "leaf.pem").write_bytes(trusted.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    call_command(
        "domains-add",
        DOMAIN,
        app=app.name,
        cert=str(tmp_path / "leaf.pem"),
        key=str(tmp_path / "key.pem"),
        stdout=io.StringIO(),
    )
    domain = Domain.objects.get(name=DOMAIN)
    assert domain.status == DomainStatus.PENDING_DNS
    assert served_certificate(DOMAIN).fingerprint_sha256 == fingerprint(leaf)


def test_domains_show_prints_the_served_certificates_fingerprint(trusted):
    now = timezone.now()
    domain, letsencrypt = in_use_domain()
    out = io.StringIO()
    call_command("domains-show", DOMAIN, stdout=out)
    assert letsencrypt.fingerprint_sha256 in out.getvalue()

    leaf, _ = install(trusted, domain, now)
    out = io.StringIO()
    call_command("domains-show", DOMAIN, stdout=out)
    assert fingerprint(leaf) in out.getvalue()
    assert letsencrypt.fingerprint_sha256 not in out.getvalue()


# --- admin ------------------------------------------------------------------------------------------------


def upload_url(domain: Domain) -> str:
    return reverse("admin:domains_domain_upload_certificate", args=[domain.pk])


def test_admin_upload_page_renders_the_form(admin_client):
    domain, _ = in_use_domain()
    response = admin_client.get(upload_url(domain))
    assert response.status_code == 200
    body = response.content.decode()
    assert f"Upload a custom certificate for {DOMAIN}" in body
    assert 'name="private_key"' in body


def post_upload(admin_client, domain: Domain, trusted, **extra):
    """A valid certificate for the domain, with its key, posted to the admin's upload page."""
    leaf, key = trusted.leaf([DOMAIN])
    files = {
        "certificate": SimpleUploadedFile("bundle.pem", trusted.chain_pem(leaf)),
        "private_key": SimpleUploadedFile("key.pem", key_pem(key)),
    }
    return leaf, admin_client.post(upload_url(domain), files, **extra)


def test_admin_upload_stores_the_certificate_and_redirects_to_the_domain(trusted, admin_client):
    domain, _ = in_use_domain()
    leaf, response = post_upload(admin_client, domain, trusted)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:domains_domain_change", args=[domain.pk])
    assert list(custom_rows(domain).values_list("fingerprint_sha256", flat=True)) == [fingerprint(leaf)]


def test_admin_rejected_upload_shows_the_reason_and_stores_nothing(trusted, admin_client):
    domain, _ = in_use_domain()
    now = timezone.now()
    leaf, key = trusted.leaf([DOMAIN], not_before=now - 100 * DAY, not_after=now - DAY)
    response = admin_client.post(
        upload_url(domain),
        {
            "certificate": SimpleUploadedFile("bundle.pem", trusted.chain_pem(leaf)),
            "private_key": SimpleUploadedFile("key.pem", key_pem(key)),
        },
    )
    assert response.status_code == 200
    expired_on = leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"the certificate expired on {expired_on}" in response.content.decode()
    assert not custom_rows(domain).exists()
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE


def test_admin_expiring_filter_lists_only_domains_whose_served_certificate_ends_within_ten_days(
    admin_client,
):
    now = timezone.now()
    soon = DomainFactory(name="soon.example.com", status=DomainStatus.IN_USE)
    CertificateFactory(domain=soon, not_before=now - 85 * DAY, not_after=now + 5 * DAY)
    later = DomainFactory(name="later.example.com", status=DomainStatus.IN_USE)
    CertificateFactory(domain=later, not_before=now - 10 * DAY, not_after=now + 80 * DAY)

    response = admin_client.get(reverse("admin:domains_domain_changelist"), {"served": "expiring"})
    assert response.status_code == 200
    assert [domain.pk for domain in response.context["cl"].result_list] == [soon.pk]
    body = response.content.decode()
    assert "soon.example.com" in body
    assert "later.example.com" not in body


def test_admin_change_page_shows_the_served_certificates_fingerprint(trusted, admin_client):
    domain, letsencrypt = in_use_domain()
    leaf, _ = install(trusted, domain, timezone.now())
    body = admin_client.get(reverse("admin:domains_domain_change", args=[domain.pk])).content.decode()
    assert f"SHA-256 {fingerprint(leaf)}" in body
    assert letsencrypt.fingerprint_sha256 not in body


def test_admin_remove_action_removes_the_custom_certificate(trusted, admin_client):
    domain, letsencrypt = in_use_domain()
    install(trusted, domain, timezone.now())
    response = admin_client.post(
        reverse("admin:domains_domain_changelist"),
        {"action": "remove_custom_certificate_action", "_selected_action": [domain.pk]},
    )
    assert response.status_code == 302
    assert not custom_rows(domain).exists()
    assert served_certificate(DOMAIN).pk == letsencrypt.pk
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE


@pytest.mark.django_db
def test_the_database_refuses_a_second_custom_certificate_for_one_domain():
    from django.db import IntegrityError

    domain = DomainFactory()
    CertificateFactory(domain=domain, source=CertificateSource.CUSTOM)
    with pytest.raises(IntegrityError, match="certificate_one_custom_per_domain"):
        CertificateFactory(domain=domain, source=CertificateSource.CUSTOM)


def test_admin_upload_declared_over_the_page_cap_is_a_413_and_stores_nothing(trusted, admin_client, settings):
    domain, _ = in_use_domain()
    # The body is shorter than it claims: reading it would fail in the test client's payload.
    _, response = post_upload(
        admin_client, domain, trusted, CONTENT_LENGTH=str(settings.PAGE_MAX_BODY_BYTES + 1)
    )
    assert response.status_code == 413
    assert "(PAGE_MAX_BODY_BYTES)" in response.content.decode()
    assert not custom_rows(domain).exists()
