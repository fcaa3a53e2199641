"""Owed revocations on the real database: what the re-drive claims (expired leases of unsettled
rows only), that a claim is exclusive (a new token, locked rows skipped), and how an attempt ends
(refused or given up for good, deferred with a growing delay). No CA is asked: a custom
certificate is refused before any request, and an unreachable directory cannot be reached.
(tests/integration/test_revocation.py re-drives a lost revocation against Pebble.)"""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from certificates.models import CertificateSource, Revocation, RevocationOutcome
from certificates.revocation_queue import (
    LEASE,
    MAX_ATTEMPTS,
    ask_again,
    claim_expired,
    owe_revocation,
    settle,
)
from domains.models import DomainEvent
from domains.revocations import attempt_owed
from tests.factories import AcmeAccountFactory, CertificateFactory
from tests.pki import Pki, pem

pytestmark = pytest.mark.django_db

PKI = Pki("Revocation Queue Test")


def _certificate(**fields):
    leaf, _ = PKI.leaf(["www.example.com"])
    return CertificateFactory(fullchain_pem=pem(leaf).decode(), **fields)


def _owed(now: datetime.datetime, reason: str = "cessationOfOperation", **fields) -> tuple[Revocation, str]:
    cert = _certificate(**fields)
    revocation_id, token = owe_revocation(cert, reason, cert.account_id, cert.domain.name, now)
    return Revocation.objects.get(pk=revocation_id), token


def test_an_owed_revocation_keeps_the_leaf_and_is_leased_to_its_first_send():
    now = timezone.now()
    row, token = _owed(now)
    assert row.outcome == RevocationOutcome.PENDING and str(row.lease_token) == token
    assert row.lease_until == now + LEASE
    assert row.leaf_pem.startswith("-----BEGIN CERTIFICATE-----") and row.serial == row.certificate.serial
    assert claim_expired(now + LEASE - datetime.timedelta(seconds=1)) == []


def test_an_expired_lease_is_claimed_once_with_a_new_token_and_the_old_message_does_nothing():
    now = timezone.now()
    row, first_token = _owed(now)
    later = now + LEASE
    claimed = claim_expired(later)
    assert [pk for pk, _ in claimed] == [row.pk]
    new_token = claimed[0][1]
    assert new_token != first_token
    # Claimed again only once the new lease has expired.
    assert claim_expired(later) == []
    assert attempt_owed(row.pk, first_token, later).startswith("nothing to do")
    row.refresh_from_db()
    assert (row.attempts, str(row.lease_token), row.lease_until) == (0, new_token, later + LEASE)


@pytest.mark.django_db(transaction=True)
def test_a_revocation_another_redrive_holds_is_skipped_not_waited_for():
    now = timezone.now()
    held, _ = _owed(now)
    free, _ = _owed(now)
    locked, release = threading.Event(), threading.Event()

    def other_redrive():
        try:
            with transaction.atomic():
                Revocation.objects.select_for_update().filter(pk=held.pk).first()
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_redrive)
    thread.start()
    try:
        assert locked.wait(10)
        claimed = claim_expired(now + LEASE)
    finally:
        release.set()
        thread.join()
    assert [pk for pk, _ in claimed] == [free.pk]


def test_settled_revocations_are_never_redriven():
    now = timezone.now()
    done, done_token = _owed(now)
    refused, refused_token = _owed(now)
    pending, _ = _owed(now)
    assert settle(done.pk, done_token, RevocationOutcome.REVOKED, "", now)
    assert settle(refused.pk, refused_token, RevocationOutcome.REFUSED, "the CA said no", now)
    far = now + datetime.timedelta(days=30)
    assert [pk for pk, _ in claim_expired(far)] == [pending.pk]
    # A second report of the outcome changes nothing: the token no longer holds the row.
    assert not settle(done.pk, done_token, RevocationOutcome.GAVE_UP, "late", now)
    assert Revocation.objects.get(pk=done.pk).outcome == RevocationOutcome.REVOKED


def test_a_revocation_the_ca_refuses_is_settled_for_good_and_told_in_the_domains_history():
    now = timezone.now()
    # A custom certificate is not the platform's to revoke: refused without asking any CA.
    row, token = _owed(now, source=CertificateSource.CUSTOM)
    assert attempt_owed(row.pk, token, now).startswith("refused: it is a custom certificate")
    row.refresh_from_db()
    assert (row.outcome, row.lease_until, row.settled_at, row.attempts) == (
        RevocationOutcome.REFUSED,
        None,
        now,
        1,
    )
    assert "custom certificate" in row.problem
    event = DomainEvent.objects.get(domain=row.certificate.domain)
    assert f"serial {row.serial} could not be revoked" in event.reason
    assert claim_expired(now + datetime.timedelta(days=30)) == []


def _unreachable_account():
    # Port 9 (discard) is closed here: reading the directory fails at once.
    return AcmeAccountFactory(
        directory_url="https://127.0.0.1:9/dir", account_url="https://127.0.0.1:9/acct/1"
    )


def test_a_ca_that_cannot_be_reached_leaves_the_revocation_to_the_redrive_with_a_growing_delay():
    now = timezone.now()
    row, token = _owed(now, account=_unreachable_account())
    assert attempt_owed(row.pk, token, now).startswith("deferred: could not reach the CA")
    row.refresh_from_db()
    assert (row.outcome, row.attempts, row.lease_until) == (
        RevocationOutcome.PENDING,
        1,
        now + datetime.timedelta(seconds=30),
    )
    [(pk, token)] = claim_expired(row.lease_until)
    later = row.lease_until
    assert attempt_owed(pk, token, later).startswith("deferred")
    row.refresh_from_db()
    assert (row.attempts, row.lease_until) == (2, later + datetime.timedelta(seconds=60))
    assert not DomainEvent.objects.filter(domain=row.certificate.domain).exists()


def test_the_last_attempt_the_ca_cannot_take_gives_the_revocation_up_for_good():
    now = timezone.now()
    row, token = _owed(now, account=_unreachable_account())
    Revocation.objects.filter(pk=row.pk).update(attempts=MAX_ATTEMPTS - 1)
    assert attempt_owed(row.pk, token, now).startswith("gave up: could not reach the CA")
    row.refresh_from_db()
    assert (row.outcome, row.attempts, row.lease_until) == (RevocationOutcome.GAVE_UP, MAX_ATTEMPTS, None)
    assert f"({MAX_ATTEMPTS} attempts)" in row.problem
    assert DomainEvent.objects.filter(
        domain=row.certificate.domain, reason__contains="could not be revoked"
    ).exists()
    assert claim_expired(now + datetime.timedelta(days=30)) == []


def test_a_revocation_whose_attempts_never_finish_is_given_up_without_asking_again():
    now = timezone.now()
    # Each attempt so far died with its worker (counted when taken, never settled).
    row, token = _owed(now, account=_unreachable_account())
    Revocation.objects.filter(pk=row.pk).update(attempts=MAX_ATTEMPTS)
    assert attempt_owed(row.pk, token, now).startswith("gave up: no attempt finished")
    assert Revocation.objects.get(pk=row.pk).outcome == RevocationOutcome.GAVE_UP


def test_asking_again_makes_only_failed_revocations_due_at_the_next_tick():
    now = timezone.now()
    failed, failed_token = _owed(now, source=CertificateSource.CUSTOM)
    attempt_owed(failed.pk, failed_token, now)
    done, done_token = _owed(now)
    settle(done.pk, done_token, RevocationOutcome.REVOKED, "", now)
    assert ask_again([failed.pk, done.pk], now) == 1
    failed.refresh_from_db()
    assert (failed.outcome, failed.attempts, failed.settled_at) == (RevocationOutcome.PENDING, 0, None)
    assert [pk for pk, _ in claim_expired(now)] == [failed.pk]
    assert Revocation.objects.get(pk=done.pk).outcome == RevocationOutcome.REVOKED


def test_a_deleted_certificate_leaves_its_owed_revocation_with_the_leaf_and_no_account_is_refused():
    now = timezone.now()
    row, token = _owed(now)
    row.certificate.delete()
    row.refresh_from_db()
    assert row.certificate_id is None and row.leaf_pem
    # Neither the row's key nor any account can sign for it: refused for good, and logged.
    assert "no ACME account" in attempt_owed(row.pk, token, now)
    assert Revocation.objects.get(pk=row.pk).outcome == RevocationOutcome.REFUSED


def test_migration_creates_the_revocation_redrive_every_two_minutes_on_the_acme_queue():
    task = PeriodicTask.objects.get(name="Re-drive owed revocations")
    assert task.task == "workers.tasks.acme.redrive_revocations"
    assert (task.interval.every, task.interval.period, task.queue, task.enabled) == (
        120,
        "seconds",
        "acme",
        True,
    )
