"""Revocation against Pebble, which revokes for real: revoke and replace (key compromise) serves the
new certificate before the old one is revoked, deleting a domain revokes its certificates
(cessationOfOperation) unless REVOKE_ON_DELETE is off, and a certificate already revoked is no
error; a revocation whose message is lost (its worker killed right after the commit that owes it,
or the broker flushed) is sent again by the re-drive. What Pebble recorded is asked of its
management API (cert-status-by-serial)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from certificates.models import (
    Certificate,
    CertificateSource,
    Order,
    OrderState,
    Revocation,
    RevocationOutcome,
)
from certificates.revocation import REASONS, RevocationRefused, leaf_of, revoke_certificate
from certificates.revocation_queue import claim_expired
from certificates.serving import served_certificate
from domains.models import Domain, DomainEvent, DomainStatus
from domains.revocations import RevokeAndReplaceRefused, revoke_and_replace
from domains.services import delete_domain
from tests.conftest import start_celery_worker
from tests.integration.pointing import without_reusable_authorizations
from tests.integration.polling import issued, status_of, wait_for
from workers.tasks.acme import redrive_revocations

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _name(prefix: str = "www") -> str:
    # Its own registered domain, so that its quota is its own.
    return f"{prefix}.revoke-{uuid.uuid4().hex[:10]}.com"


def pebble_status(pebble_stack, cert: Certificate | str) -> dict:
    """What Pebble says of a certificate: {"Status": "Valid"|"Revoked", "Reason": n, ...}."""
    pem = cert if isinstance(cert, str) else cert.fullchain_pem
    serial = format(leaf_of(pem).serial_number, "x")
    url = f"{pebble_stack.management_url}/cert-status-by-serial/{serial}"
    with urllib.request.urlopen(url, timeout=5, context=pebble_stack.ssl_context()) as response:
        return json.loads(response.read())


def _public_key(cert: Certificate) -> bytes:
    return (
        leaf_of(cert.fullchain_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _revoked_at_pebble(pebble_stack, cert) -> dict | None:
    status = pebble_status(pebble_stack, cert)
    return status if status["Status"] == "Revoked" else None


def test_revoke_and_replace_serves_a_new_key_before_the_old_serial_is_revoked_for_key_compromise(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    assert pebble_status(issuance_stack, old)["Status"] == "Valid"

    message = revoke_and_replace(domain)
    assert old.serial in message

    served_when_revoked = None
    deadline = time.monotonic() + 60
    while served_when_revoked is None:
        # Pebble first, then what is served: once Pebble shows the old serial revoked, the name
        # must already be served with the new certificate (serving never goes back).
        revoked = _revoked_at_pebble(issuance_stack, old)
        served = served_certificate(name)
        if revoked:
            served_when_revoked = served
        assert time.monotonic() < deadline, "the old certificate was not revoked within 60 s"
        time.sleep(0.05)
    new = (
        Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
        .exclude(pk=old.pk)
        .get()
    )
    assert served_when_revoked.fingerprint_sha256 == new.fingerprint_sha256
    assert _public_key(new) != _public_key(old) and new.serial != old.serial
    assert pebble_status(issuance_stack, old)["Reason"] == REASONS["keyCompromise"]
    assert pebble_status(issuance_stack, new)["Status"] == "Valid"

    old.refresh_from_db()
    wait_for(lambda: Certificate.objects.get(pk=old.pk).revoked_at, what="the revocation recorded")
    old.refresh_from_db()
    assert old.revocation_reason == "keyCompromise" and old.renew_at is None
    order = Order.objects.get(renews=old)
    assert (order.state, order.revoke_replaced, order.replaces, order.is_renewal) == (
        OrderState.VALID,
        "keyCompromise",
        "",
        True,
    )
    assert status_of(domain) == DomainStatus.IN_USE
    reasons = list(DomainEvent.objects.filter(domain=domain).values_list("reason", flat=True))
    assert any("revoke and replace" in reason and old.serial in reason for reason in reasons)


def test_revoke_and_replace_is_refused_while_an_order_is_in_flight_and_orders_nothing(
    issuance_stack, challtestsrv, app
):
    domain, cert = issued(challtestsrv, app, _name())
    revoke_and_replace(domain)
    with pytest.raises(RevokeAndReplaceRefused, match="already in flight"):
        revoke_and_replace(domain)
    assert Order.objects.filter(domain=domain, renews=cert).count() == 1
    wait_for(lambda: _revoked_at_pebble(issuance_stack, cert), what="the first request's revocation")


def test_deleting_a_domain_revokes_its_certificate_for_cessation_of_operation(
    issuance_stack, challtestsrv, app
):
    domain, cert = issued(challtestsrv, app, _name())
    delete_domain(domain)
    assert not Domain.objects.filter(pk=domain.pk).exists()
    status = wait_for(lambda: _revoked_at_pebble(issuance_stack, cert), what="the revocation at Pebble")
    assert status["Reason"] == REASONS["cessationOfOperation"]


def test_with_revoke_on_delete_off_deleting_a_domain_revokes_nothing(
    issuance_stack, challtestsrv, app, settings
):
    kept_domain, kept = issued(challtestsrv, app, _name("kept"))
    gone_domain, gone = issued(challtestsrv, app, _name("gone"))
    settings.REVOKE_ON_DELETE = False
    delete_domain(kept_domain)
    settings.REVOKE_ON_DELETE = True
    delete_domain(gone_domain)
    # The second deletion's revocation is sent after the first deletion's would have been.
    wait_for(lambda: _revoked_at_pebble(issuance_stack, gone), what="the second domain's revocation")
    time.sleep(1)
    assert pebble_status(issuance_stack, kept)["Status"] == "Valid"


def test_a_certificate_the_ca_already_revoked_counts_as_revoked(issuance_stack, challtestsrv, app):
    _, cert = issued(challtestsrv, app, _name())
    assert revoke_certificate(cert.pk, "cessationOfOperation") == "revoked"
    assert revoke_certificate(cert.pk, "cessationOfOperation") == "recorded before"
    # The row forgot it (a crash between the CA's answer and the commit): the CA's
    # alreadyRevoked is taken as done, with either signer.
    for reason in ("cessationOfOperation", "keyCompromise"):
        Certificate.objects.filter(pk=cert.pk).update(revoked_at=None, revocation_reason="")
        assert revoke_certificate(cert.pk, reason) == "already revoked"
        cert.refresh_from_db()
        assert cert.revoked_at is not None and cert.revocation_reason == reason
    assert pebble_status(issuance_stack, cert)["Reason"] == REASONS["cessationOfOperation"]


def test_a_certificate_stored_without_its_account_is_revoked_with_its_domains_latest_valid_order(
    issuance_stack, challtestsrv, app
):
    _, cert = issued(challtestsrv, app, _name())
    Certificate.objects.filter(pk=cert.pk).update(account=None)
    assert revoke_certificate(cert.pk, "superseded") == "revoked"
    assert pebble_status(issuance_stack, cert)["Reason"] == REASONS["superseded"]


def test_key_compromise_is_signed_by_the_certificates_own_key_without_any_account(
    issuance_stack, challtestsrv, app
):
    domain, cert = issued(challtestsrv, app, _name())
    # No account recorded and no order left to name one: only the key itself can sign.
    Certificate.objects.filter(pk=cert.pk).update(account=None)
    Order.objects.filter(domain=domain).delete()
    with pytest.raises(RevocationRefused, match="no ACME account"):
        revoke_certificate(cert.pk, "cessationOfOperation")
    assert revoke_certificate(cert.pk, "keyCompromise") == "revoked"
    assert pebble_status(issuance_stack, cert)["Reason"] == REASONS["keyCompromise"]


def test_a_replacement_the_ca_refuses_leaves_the_old_certificate_served_unrevoked_and_says_so(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    without_reusable_authorizations(domain)
    # Pebble's HTTP-01 validation now reaches nothing (no server listens on 127.0.0.2).
    challtestsrv.clear_a(name)
    challtestsrv.add_a(name, ["127.0.0.2"])
    revoke_and_replace(domain)
    order = wait_for(
        lambda: Order.objects.filter(renews=old, state=OrderState.INVALID).first(), what="the order to fail"
    )
    assert order.revoke_replaced == "keyCompromise"
    assert served_certificate(name).pk == old.pk
    assert pebble_status(issuance_stack, old)["Status"] == "Valid"
    old.refresh_from_db()
    assert old.revoked_at is None and old.renewal_error.startswith("Renewal failed")
    event = DomainEvent.objects.filter(domain=domain, reason__startswith="revoke and replace failed").get()
    assert f"serial {old.serial} is still served and was NOT revoked" in event.reason


def _lease_expires(revocation: Revocation) -> None:
    """The owed revocation's lease (five minutes) is over, as if that time had passed."""
    assert claim_expired() == [], "re-driven while its lease still held"
    Revocation.objects.filter(pk=revocation.pk).update(lease_until=timezone.now())


def test_a_revoke_and_replace_whose_revocation_message_is_lost_is_revoked_by_the_redrive(
    without_session_worker, pebble_stack, web_server, app
):
    name = _name()
    worker = start_celery_worker("worker-issues")
    try:
        domain, old = issued(pebble_stack.challtestsrv, app, name)
    finally:
        worker.stop()
    # This worker stores the new certificate, commits, and dies before sending the revocation.
    doomed = start_celery_worker(
        "worker-dies-before-revoking", extra_env={"CERTWRIGHT_FAILPOINTS": "before_revocation_sent"}
    )
    revoke_and_replace(domain)
    doomed.popen.wait(timeout=90)
    assert doomed.popen.returncode == -9, "the worker was not killed at the failpoint"
    new = (
        Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
        .exclude(pk=old.pk)
        .get()
    )
    assert served_certificate(name).pk == new.pk
    owed = Revocation.objects.get(certificate=old)
    assert (owed.outcome, owed.attempts, owed.reason) == (RevocationOutcome.PENDING, 0, "keyCompromise")

    survivor = start_celery_worker("worker-after-the-loss")
    try:
        time.sleep(2)
        # Nothing else sends it: the message was never sent.
        assert pebble_status(pebble_stack, old)["Status"] == "Valid"
        _lease_expires(owed)
        assert redrive_revocations() == 1
        status = wait_for(lambda: _revoked_at_pebble(pebble_stack, old), what="the re-driven revocation")
        assert status["Reason"] == REASONS["keyCompromise"]
        wait_for(
            lambda: Revocation.objects.get(pk=owed.pk).outcome == RevocationOutcome.REVOKED, what="it settled"
        )
    finally:
        survivor.stop()
    owed.refresh_from_db()
    old.refresh_from_db()
    assert (owed.attempts, owed.lease_until, owed.problem) == (1, None, "")
    assert (old.revocation_reason, old.revoked_at is not None) == ("keyCompromise", True)
    assert pebble_status(pebble_stack, new)["Status"] == "Valid"
    assert redrive_revocations() == 0


def test_a_deleted_domains_revocation_lost_with_the_broker_is_revoked_by_the_redrive(
    without_session_worker, pebble_stack, web_server, app, broker_redis
):
    worker = start_celery_worker("worker-issues-then-stops")
    try:
        domain, cert = issued(pebble_stack.challtestsrv, app, _name())
    finally:
        worker.stop()
    delete_domain(domain)
    # The broker keeps nothing on disk: a restart loses the message the deletion sent.
    broker_redis.flushdb()
    owed = Revocation.objects.get(serial=cert.serial)
    assert (owed.certificate_id, owed.reason, owed.outcome) == (
        None,
        "cessationOfOperation",
        RevocationOutcome.PENDING,
    )
    survivor = start_celery_worker("worker-after-the-flush")
    try:
        _lease_expires(owed)
        assert redrive_revocations() == 1
        status = wait_for(lambda: _revoked_at_pebble(pebble_stack, cert), what="the re-driven revocation")
        assert status["Reason"] == REASONS["cessationOfOperation"]
        wait_for(
            lambda: Revocation.objects.get(pk=owed.pk).outcome == RevocationOutcome.REVOKED, what="it settled"
        )
    finally:
        survivor.stop()
