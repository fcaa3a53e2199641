"""Revocation as the domain sees it: revoke and replace (key compromise), the revocations a
deleted domain asks for, and what a revocation that failed for good leaves in the domain's history.

Revoke and replace is a renewal that revokes: a new key and a new certificate are ordered as the
renewal sweep orders them (domains/orders.create_orders, the same quota), and once the new
certificate is stored and served (workers/acme_steps.step_download), the old one is revoked with
reason keyCompromise, after that commit. The order carries no ARI `replaces`: the exemption from
every rate limit that `replaces` earns is Let's Encrypt's for renewals it asked for (RFC 9773
windows), and a customer-triggered reissue, which a customer could repeat at will, must stay
within the platform's own quota instead (the exact-set limit, as any renewal of the same names).
It also works with a CA that offers no ARI.
"""

from __future__ import annotations

import datetime
import logging

import requests
from acme import errors as acme_errors
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from certificates.acme_client import account_row, get_account
from certificates.models import ACTIVE_ORDER_STATES, Certificate, CertificateSource, Order, RevocationOutcome
from certificates.revocation import (
    CESSATION_OF_OPERATION,
    KEY_COMPROMISE,
    RevocationDeferred,
    RevocationRefused,
    issuing_account,
    leaf_of,
    revoke_certificate,
    revoke_pem,
)
from certificates.revocation_queue import MAX_ATTEMPTS, defer, owe_revocation, settle, take
from domains.enqueue import revoke_owed_later
from domains.locking import lock_certificates, lock_domains
from domains.models import Domain, DomainEvent
from domains.orders import Start, create_orders, fresh_keys, renewal_lease_until
from domains.pauses import paused_refusal
from domains.profiles import effective_profile
from domains.quota_policy import Candidate, Granted, refund, reserve

logger = logging.getLogger(__name__)


class RevokeAndReplaceRefused(Exception):
    """Revoke and replace cannot start now; the message says why (the API answers 409)."""


def current_letsencrypt_certificate(domain_id: int, now: datetime.datetime) -> Certificate | None:
    """The domain's Let's Encrypt certificate that is served (or is the ready fallback behind a
    custom one): the newest valid, unrevoked one."""
    return (
        Certificate.objects.filter(
            domain_id=domain_id,
            source=CertificateSource.LETSENCRYPT,
            not_before__lte=now,
            not_after__gt=now,
            revoked_at__isnull=True,
        )
        .order_by("-not_after", "-pk")
        .first()
    )


def _refusal(domain: Domain, now: datetime.datetime) -> str | None:
    """Why revoke and replace cannot start for `domain` now, or None."""
    name = domain.name
    if not domain.letsencrypt_enabled:
        return (
            f"{name}: Let's Encrypt is turned off for this domain, so no new certificate can replace "
            "the old one; turn it on first (or upload a custom certificate)"
        )
    if domain.ca_paused_at is not None:
        return paused_refusal(name, "the new certificate (nothing is revoked)")
    if current_letsencrypt_certificate(domain.pk, now) is None:
        return f"{name} has no valid Let's Encrypt certificate to revoke and replace"
    if Order.objects.filter(domain_id=domain.pk, state__in=ACTIVE_ORDER_STATES).exists():
        return (
            f"{name}: a certificate order is already in flight; try again once it has ended "
            "(see the domain's status and history)"
        )
    return None


def revoke_and_replace(domain: Domain, now: datetime.datetime | None = None) -> str:
    """Orders a new key and certificate for the domain's Let's Encrypt certificate, to be served
    before the old one is revoked with reason keyCompromise; returns what it did. Raises
    RevokeAndReplaceRefused when Let's Encrypt is off, there is no such certificate, an order is
    in flight, or the quota has no token now (nothing is ordered or spent then)."""
    now = now or timezone.now()
    refusal = _refusal(domain, now)
    if refusal:
        raise RevokeAndReplaceRefused(refusal)
    cert = current_letsencrypt_certificate(domain.pk, now)
    # Never registered from a web request: the order's first step registers it if need be.
    account = account_row()
    candidate = Candidate(
        domain.pk, domain.name, cert.renewal_reservation, renewal=sorted(cert.sans) == [domain.name]
    )
    outcome = reserve([candidate], account.pk, now)[domain.pk]
    if not isinstance(outcome, Granted):
        refund(outcome.reservation, [domain.name], account.pk, "revoke and replace was refused")
        if cert.renewal_reservation:
            Certificate.objects.filter(pk=cert.pk).update(renewal_reservation=None)
        raise RevokeAndReplaceRefused(f"{domain.name}: nothing was ordered: {outcome.message}")
    start = Start(
        domain.pk,
        domain.name,
        reason="revoke and replace (key compromise)",
        reservation=outcome.reservation,
        renewal=True,
        renews=cert.pk,
        revoke_replaced=KEY_COMPROMISE,
        # The domain's profile, as every renewal asks for it; no `replaces`: see the module's text.
        profile=effective_profile(domain.acme_profile),
    )
    keys = fresh_keys([start])
    started = False
    with transaction.atomic():
        # Under the domain's lock, as deletion and Let's Encrypt off take it: the checks still hold.
        locked = lock_domains([domain.pk]).first()
        refusal = _refusal(locked, now) if locked is not None else f"{domain.name} was deleted"
        if not refusal and current_letsencrypt_certificate(domain.pk, now).pk != cert.pk:
            refusal = f"{domain.name}: its certificate changed meanwhile; ask again"
        if not refusal:
            lock_certificates([cert.pk]).first()
            # A domain given an order meanwhile is skipped, its reservation refunded after commit.
            started = bool(create_orders([start], keys, account, now))
        if started:
            # The renewal sweep leaves it to this order; the order hands it back if it fails.
            Certificate.objects.filter(pk=cert.pk).update(
                renew_at=renewal_lease_until(now), renewal_claim=None, renewal_reservation=None
            )
            DomainEvent.objects.create(
                domain_id=domain.pk,
                created=now,
                from_status=locked.status,
                to_status=locked.status,
                reason=f"revoke and replace: ordering a new key and certificate; the certificate "
                f"with serial {cert.serial} is revoked (keyCompromise) once the new one is served",
            )
    if not started:
        if refusal:
            refund(outcome.reservation, [domain.name], account.pk, "revoke and replace was refused")
        raise RevokeAndReplaceRefused(
            refusal or f"{domain.name}: a certificate order is already in flight; try again once it has ended"
        )
    return (
        f"{domain.name}: ordering a new key and certificate; the certificate with serial {cert.serial} "
        "is revoked (keyCompromise) as soon as the new one is served"
    )


def replacement_failed(order: Order, problem: str, now: datetime.datetime) -> bool:
    """A revoke-and-replace order ended without a certificate: its domain's history says that the
    old certificate is still served and was not revoked, so that the customer asks again (a later
    renewal by the sweep does not revoke). Returns whether the order was one. Call in the
    transaction that ends the order."""
    if not order.revoke_replaced or order.renews_id is None:
        return False
    row = Certificate.objects.filter(pk=order.renews_id).values("serial", "domain__status").first()
    if row is None:
        return False
    DomainEvent.objects.create(
        domain_id=order.domain_id,
        created=now,
        from_status=row["domain__status"],
        to_status=row["domain__status"],
        reason=f"revoke and replace failed: {problem.rstrip('.')}; the certificate with serial "
        f"{row['serial']} is still served and was NOT revoked: ask again once the problem is fixed",
    )
    return True


def revoke_stored(cert_id: int, reason: str, now: datetime.datetime | None = None) -> str:
    """Revokes a stored certificate (certificates/revocation.py); a permanent refusal is logged
    and written to its domain's history instead of raised. RevocationDeferred propagates."""
    try:
        return revoke_certificate(cert_id, reason, now)
    except RevocationRefused as exc:
        give_up(cert_id, reason, str(exc), now)
        return f"refused: {exc}"


def give_up(cert_id: int, reason: str, problem: str, now: datetime.datetime | None = None) -> None:
    """The one writer of a revocation that failed for good: logged, and told in its domain's
    history (the certificate stays as it was: not revoked)."""
    now = now or timezone.now()
    row = (
        Certificate.objects.filter(pk=cert_id)
        .values("serial", "domain_id", "domain__name", "domain__status")
        .first()
    )
    if row is None:
        logger.error("certificate %s could not be revoked (%s): %s", cert_id, reason, problem)
        return
    logger.error(
        "certificate %s of %s (serial %s) could not be revoked (%s): %s",
        cert_id,
        row["domain__name"],
        row["serial"],
        reason,
        problem,
    )
    DomainEvent.objects.create(
        domain_id=row["domain_id"],
        created=now,
        from_status=row["domain__status"],
        to_status=row["domain__status"],
        reason=f"the certificate with serial {row['serial']} could not be revoked ({reason}): {problem}",
    )


def owe_revocation_of(cert_id: int, reason: str, now: datetime.datetime) -> int | None:
    """Records that the stored certificate must be revoked with `reason` and sends the attempt
    after commit (the re-drive sends it again if that message is lost). Call inside the
    transaction that decides it; returns the owed revocation's id, or None when the certificate
    is gone or its stored chain no longer parses (logged: the caller's change goes on)."""
    cert = Certificate.objects.filter(pk=cert_id).select_related("domain").first()
    if cert is None:
        return None
    account = issuing_account(cert)
    try:
        revocation_id, token = owe_revocation(
            cert, reason, account.pk if account else None, cert.domain.name, now
        )
    except ValueError as exc:
        logger.error("certificate %s (serial %s) cannot be revoked: %s", cert.pk, cert.serial, exc)
        return None
    revoke_owed_later(revocation_id, token)
    return revocation_id


# What certificates/revocation.py reports, as the owed revocation's outcome.
_OUTCOMES = {
    "revoked": RevocationOutcome.REVOKED,
    "recorded before": RevocationOutcome.REVOKED,
    "already revoked": RevocationOutcome.ALREADY_REVOKED,
    "expired": RevocationOutcome.EXPIRED,
}


def _revoke(row, now: datetime.datetime) -> str:
    """One attempt at the CA: the certificate's row while it exists (its key signs keyCompromise,
    and the row records the revocation), else the leaf kept on the owed revocation."""
    if row.certificate_id is not None:
        outcome = revoke_certificate(row.certificate_id, row.reason, now)
        if outcome != "gone":
            return outcome
    account = row.account
    if account is not None and not account.account_url:
        try:
            account = get_account(account.directory_url)
        except (requests.RequestException, acme_errors.ClientError) as exc:
            raise RevocationDeferred(f"could not reach the CA: {type(exc).__name__}: {exc}") from None
    return revoke_pem(account, leaf_of(row.leaf_pem), row.reason, now=now)


def _failed_for_good(row, token: str, outcome: str, problem: str, now: datetime.datetime) -> None:
    if not settle(row.pk, token, outcome, problem, now):
        return
    if row.certificate_id is not None:
        give_up(row.certificate_id, row.reason, problem, now)
    else:
        logger.error(
            "certificate of %s (serial %s) could not be revoked (%s): %s",
            row.domain_name,
            row.serial,
            row.reason,
            problem,
        )


def attempt_owed(revocation_id: int, token: str, now: datetime.datetime | None = None) -> str:
    """Asks the CA for an owed revocation that `token` holds, and settles or defers it: a refusal
    or the last failed attempt settles it for good (logged, and told in its domain's history); a
    CA that cannot be asked now leaves it to the re-drive. Returns what happened."""
    now = now or timezone.now()
    row = take(revocation_id, token, now)
    if row is None:
        return "nothing to do (settled, or sent again by the re-drive)"
    if row.attempts > MAX_ATTEMPTS:
        # Attempts that never finished (their worker died) count too: a poison row ends here.
        problem = f"{row.problem or 'no attempt finished'} ({MAX_ATTEMPTS} attempts)"
        _failed_for_good(row, token, RevocationOutcome.GAVE_UP, problem, now)
        return f"gave up: {problem}"
    try:
        outcome = _revoke(row, now)
    except RevocationRefused as exc:
        _failed_for_good(row, token, RevocationOutcome.REFUSED, str(exc), now)
        return f"refused: {exc}"
    except RevocationDeferred as exc:
        if row.attempts >= MAX_ATTEMPTS:
            _failed_for_good(row, token, RevocationOutcome.GAVE_UP, f"{exc} ({row.attempts} attempts)", now)
            return f"gave up: {exc}"
        defer(row.pk, token, str(exc), row.attempts, now)
        return f"deferred: {exc}"
    settle(row.pk, token, _OUTCOMES[outcome], "", now)
    return outcome


def revoke_on_delete(domain_id: int, now: datetime.datetime | None = None) -> int:
    """When REVOKE_ON_DELETE is on, records the revocation (cessationOfOperation) of each unexpired,
    unrevoked Let's Encrypt certificate of a domain being deleted, and sends it after commit: the
    owed revocation keeps the leaf and the issuing account when the row goes with the domain.
    Custom certificates are never revoked (not the platform's). Call inside the deleting
    transaction; returns how many were owed."""
    if not settings.REVOKE_ON_DELETE:
        return 0
    now = now or timezone.now()
    asked = 0
    certs = Certificate.objects.filter(
        domain_id=domain_id, source=CertificateSource.LETSENCRYPT, not_after__gt=now, revoked_at__isnull=True
    ).only("pk", "domain_id", "account_id", "fullchain_pem", "serial")
    for cert in certs:
        if issuing_account(cert) is None:
            logger.warning(
                "certificate %s (serial %s) of a deleted domain is not revoked: no ACME account is known "
                "to have issued it",
                cert.pk,
                cert.serial,
            )
            continue
        # A stored chain that no longer parses is logged and skipped: it cannot hold up the deletion.
        if owe_revocation_of(cert.pk, CESSATION_OF_OPERATION, now) is not None:
            asked += 1
    return asked
