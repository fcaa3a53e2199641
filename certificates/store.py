"""The one writer of Certificate rows: uploads (domains/custom_certificates.py) and issued certificates
(workers/acme_steps.py) store through store_certificate."""

from __future__ import annotations

import datetime

from django.db import IntegrityError, transaction

from certificates.facts import CertificateFacts
from certificates.models import Certificate, CertificateSource, renewal_due
from certificates.sealing import seal

# (domain, fingerprint): a domain holds a certificate once.
_UNIQUE_PER_DOMAIN = "certificate_unique_per_domain"


def store_certificate(
    domain_id: int,
    source: CertificateSource | str,
    facts: CertificateFacts,
    private_key_pem: bytes,
    now: datetime.datetime,
    *,
    account_id: int | None = None,
    profile: str = "",
) -> Certificate | None:
    """Creates the domain's Certificate row for `facts` with its key sealed (a Let's Encrypt one is due
    for renewal at renewal_due: two thirds into its life, half under 10 days). Returns None and
    stores nothing when the domain already holds this very certificate (same leaf), as a step that
    runs twice finds; any other database refusal raises.

    A Let's Encrypt certificate records the account that ordered it and its profile, and is due for
    its first ACME Renewal Information check at once (the CA may already want it replaced)."""
    letsencrypt = source == CertificateSource.LETSENCRYPT
    certificate = Certificate(
        domain_id=domain_id,
        source=source,
        fullchain_pem=facts.fullchain_pem,
        private_key=seal(private_key_pem),
        not_before=facts.not_before,
        not_after=facts.not_after,
        sans=facts.sans,
        issuer=facts.issuer,
        serial=facts.serial,
        fingerprint_sha256=facts.fingerprint_sha256,
        renew_at=renewal_due(facts.not_before, facts.not_after) if letsencrypt else None,
        account_id=account_id if letsencrypt else None,
        profile=profile if letsencrypt else "",
        ari_cert_id=facts.ari_cert_id,
        ari_next_check=now if letsencrypt and facts.ari_cert_id else None,
        created=now,
    )
    try:
        # A savepoint: the duplicate leaves the caller's transaction usable.
        with transaction.atomic():
            certificate.save(force_insert=True)
    except IntegrityError as exc:
        if _constraint(exc) == _UNIQUE_PER_DOMAIN:
            return None
        raise
    return certificate


def _constraint(exc: IntegrityError) -> str | None:
    diagnostics = getattr(exc.__cause__, "diag", None)
    return getattr(diagnostics, "constraint_name", None)
