"""The revocation tasks' decisions, without a CA: a revocation the CA could not take now is retried
with a growing countdown, and given up after REVOKE_RETRIES retries, which the domain's history
then says. (tests/integration/test_revocation.py runs them in a real worker against Pebble.)"""

from __future__ import annotations

import pytest
import requests
from celery.exceptions import Retry
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from certificates.revocation import RevocationDeferred
from domains.models import DomainEvent
from tests.factories import AcmeAccountFactory, CertificateFactory
from tests.pki import Pki
from workers.tasks import acme as tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def deferred(monkeypatch):
    def revoke_stored(cert_id, reason, now=None):
        raise RevocationDeferred("could not reach the CA: ConnectionError")

    monkeypatch.setattr(tasks, "revoke_stored", revoke_stored)


def _run(task, retries: int, *args):
    task.push_request(retries=retries, id="test", called_directly=False)
    try:
        return task.run(*args)
    finally:
        task.pop_request()


@pytest.mark.parametrize(("retries", "countdown"), [(0, 30), (3, 240), (7, 3600), (13, 3600)])
def test_a_deferred_revocation_is_retried_with_a_growing_countdown(deferred, retries, countdown, monkeypatch):
    seen = {}

    def retry(**kwargs):
        seen.update(kwargs)
        return Retry()

    monkeypatch.setattr(tasks.revoke_certificate, "retry", retry)
    cert = CertificateFactory()
    with pytest.raises(Retry):
        _run(tasks.revoke_certificate, retries, cert.pk, "keyCompromise")
    assert seen == {"countdown": countdown}
    assert not DomainEvent.objects.filter(domain=cert.domain).exists()


def test_after_the_last_retry_the_revocation_is_given_up_and_the_history_says_so(deferred):
    cert = CertificateFactory(not_before=timezone.now())
    outcome = _run(tasks.revoke_certificate, tasks.REVOKE_RETRIES, cert.pk, "keyCompromise")
    assert outcome.startswith("gave up")
    event = DomainEvent.objects.get(domain=cert.domain)
    assert event.reason.startswith(f"the certificate with serial {cert.serial} could not be revoked")
    assert "could not reach the CA" in event.reason
    cert.refresh_from_db()
    assert cert.revoked_at is None


def test_a_deleted_domains_revocation_is_retried_when_its_reset_account_cannot_register_now(monkeypatch):
    # The account the CA forgot is registered again before it signs; a CA out of reach then is a
    # revocation deferred, not a task that dies and loses it.
    account = AcmeAccountFactory(account_url="")
    pem = Pki().leaf(["www.example.com"])[0].public_bytes(serialization.Encoding.PEM).decode()

    def get_account(directory_url=None):
        raise requests.ConnectionError("connection refused")

    seen = {}

    def retry(**kwargs):
        seen.update(kwargs)
        return Retry()

    monkeypatch.setattr(tasks, "get_account", get_account)
    monkeypatch.setattr(tasks.revoke_pem_task, "retry", retry)
    with pytest.raises(Retry):
        _run(tasks.revoke_pem_task, 0, account.pk, pem, "cessationOfOperation")
    assert seen == {"countdown": 30}
