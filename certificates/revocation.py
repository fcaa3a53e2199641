"""Revoking a certificate at its CA (ACME revokeCert, RFC 8555 section 7.6), with an RFC 5280 reason.

Let's Encrypt publishes revocations by CRL only (OCSP is gone), and accepts reasons unspecified,
keyCompromise, affiliationChanged, superseded and cessationOfOperation. A request is signed by
the account that issued the certificate, except keyCompromise while the platform still holds the
certificate's key: that request is signed by the key itself, which Let's Encrypt takes as proof of
compromise (it blocks the key for future certificates and revokes again a certificate revoked for
a lesser reason), where an account-signed keyCompromise is honoured without blocking the key.

Revoking is idempotent: a certificate the CA already revoked (`alreadyRevoked`) counts as revoked.
Transient failures (the network, a bad nonce, the CA's 5xx or rate limit) raise RevocationDeferred
for the caller to retry later; anything else is permanent and raises RevocationRefused.
"""

from __future__ import annotations

import datetime
import logging

import requests
from acme import errors, messages
from cryptography import x509
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from certificates.acme_client import client_for, client_signed_by_key, forget_clients
from certificates.models import AcmeAccount, Certificate, CertificateSource, Order, OrderState

logger = logging.getLogger(__name__)

# RFC 5280 section 5.3.1 CRLReason codes, those an ACME subscriber may ask Let's Encrypt for.
REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}
KEY_COMPROMISE = "keyCompromise"
CESSATION_OF_OPERATION = "cessationOfOperation"

# The CA did not process the request: asking again later may work.
TRANSIENT_PROBLEMS = {"badNonce", "serverInternal", "rateLimited"}


class RevocationDeferred(Exception):
    """The CA could not be asked now (network, bad nonce, its 5xx or rate limit): retry later."""


class RevocationRefused(Exception):
    """The certificate cannot be revoked (the CA refused, or no key or account can sign for it);
    the message says why in plain words."""


def leaf_of(fullchain_pem: str) -> x509.Certificate:
    """The leaf (first certificate) of a stored chain."""
    return x509.load_pem_x509_certificates(fullchain_pem.encode())[0]


def _describe(problem: messages.Error) -> str:
    text = problem.detail or problem.description or str(problem.typ)
    return f"{text} [{problem.code or problem.typ}]"


def _ask(acme, leaf: x509.Certificate, reason: str) -> str:
    """One revokeCert request; returns "revoked" or "already revoked"."""
    try:
        acme.revoke(leaf, REASONS[reason])
    except messages.Error as problem:
        if problem.code == "alreadyRevoked":
            return "already revoked"
        if problem.code in TRANSIENT_PROBLEMS:
            raise RevocationDeferred(f"the CA answered {_describe(problem)}") from None
        raise RevocationRefused(f"the CA refused to revoke it: {_describe(problem)}") from None
    except (requests.RequestException, errors.ClientError, errors.NonceError) as exc:
        # Start from a fresh client next time: its connection or nonces may be what failed.
        forget_clients()
        raise RevocationDeferred(f"could not reach the CA: {type(exc).__name__}: {exc}") from None
    return "revoked"


def revoke_pem(
    account: AcmeAccount | None,
    leaf: x509.Certificate,
    reason: str,
    *,
    key_pem: bytes | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """Revokes `leaf` at the CA with `reason` (a key of REASONS): signed by its own key for
    keyCompromise when `key_pem` is given, else (or when the CA refuses that) by `account`.
    Returns "revoked", "already revoked" or "expired" (nothing to revoke: an expired certificate
    is on no CRL). Raises RevocationDeferred or RevocationRefused."""
    if reason not in REASONS:
        raise RevocationRefused(f"{reason!r} is not a revocation reason; one of {', '.join(REASONS)}")
    now = now or timezone.now()
    if leaf.not_valid_after_utc <= now:
        return "expired"
    refused: RevocationRefused | None = None
    if reason == KEY_COMPROMISE and key_pem is not None:
        directory = account.directory_url if account is not None else settings.ACME_DIRECTORY_URL
        try:
            return _ask(client_signed_by_key(directory, key_pem), leaf, reason)
        except RevocationRefused as exc:
            # A CA that takes no key-signed revocation may still take the account's.
            refused = exc
        except (requests.RequestException, errors.ClientError) as exc:
            raise RevocationDeferred(f"could not reach the CA: {type(exc).__name__}: {exc}") from None
    if account is None or not account.account_url:
        raise refused or RevocationRefused(
            "no ACME account is known to have issued it (it predates the record of the issuing account, "
            "and its domain has no valid order), so nothing can sign its revocation"
        )
    try:
        acme = client_for(account)
    except (requests.RequestException, errors.ClientError) as exc:
        # The directory could not be read: the CA was not asked.
        forget_clients()
        raise RevocationDeferred(f"could not reach the CA: {type(exc).__name__}: {exc}") from None
    return _ask(acme, leaf, reason)


def issuing_account(cert: Certificate) -> AcmeAccount | None:
    """The account that ordered `cert`: the one recorded at issuance, else (a certificate stored
    before that was recorded) the account of its domain's latest valid order."""
    if cert.account_id is not None:
        return AcmeAccount.objects.filter(pk=cert.account_id).first()
    order = (
        Order.objects.filter(domain_id=cert.domain_id, state=OrderState.VALID)
        .select_related("account")
        .order_by("-finished", "-pk")
        .first()
    )
    return order.account if order is not None else None


# The routers' change feed (certificates/migrations/0010_served_changes.py): the revoked
# certificate's name, appended at this transaction's commit order like the triggers' rows.
_FEED_APPEND = """
SELECT certwright_feed_append(d.name, a.region_id)
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
  JOIN domains_app a ON a.id = d.app_id
WHERE c.id = %s
"""


def record_revoked(cert_id: int, reason: str, now: datetime.datetime) -> bool:
    """The one writer of a revocation: when and why, once (a second report changes nothing).
    A revoked certificate is renewed no more, its ARI window is not asked for, and it is served no
    more (certificates/serving.py): the routers' feed is told its name changed."""
    with transaction.atomic():
        revoked = Certificate.objects.filter(pk=cert_id, revoked_at__isnull=True).update(
            revoked_at=now,
            revocation_reason=reason,
            renew_at=None,
            renewal_claim=None,
            ari_next_check=None,
        )
        if revoked == 1:
            # revoked_at is no column the feed's trigger watches (its migration predates it).
            with connection.cursor() as cursor:
                cursor.execute(_FEED_APPEND, [cert_id])
    return revoked == 1


def revoke_certificate(cert_id: int, reason: str, now: datetime.datetime | None = None) -> str:
    """Revokes one stored Let's Encrypt certificate at its CA and records it on the row; returns
    what happened ("revoked", "already revoked", "expired", "gone", or "recorded before").
    Raises RevocationDeferred (retry later) or RevocationRefused (permanent)."""
    now = now or timezone.now()
    cert = Certificate.objects.filter(pk=cert_id).first()
    if cert is None:
        return "gone"
    if cert.revoked_at is not None:
        return "recorded before"
    if cert.source != CertificateSource.LETSENCRYPT:
        # Uploaded by the customer from another CA: not ours to revoke.
        raise RevocationRefused("it is a custom certificate, not one the platform ordered")
    outcome = revoke_pem(
        issuing_account(cert),
        leaf_of(cert.fullchain_pem),
        reason,
        key_pem=cert.private_key.reveal() if cert.private_key else None,
        now=now,
    )
    if outcome != "expired":
        record_revoked(cert_id, reason, now)
    logger.info("certificate %s (serial %s): %s (%s)", cert_id, cert.serial, outcome, reason)
    return outcome
