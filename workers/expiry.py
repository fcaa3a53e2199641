"""The expiry tick: statuses and history catch up with certificates that expired.

Serving never waits for this (certificates/serving.py decides from validity at the moment of the
question); this only makes each domain say what is served now. It reads the certificates that
expired within the last EXPIRY_WINDOW through `certificate_expiry_idx`; each change is
conditional, so running it twice, or from two beats, changes nothing more.
"""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from certificates.models import Certificate, CertificateSource
from domains.models import Domain, DomainStatus
from domains.status import NOTHING_SERVED, settle_status

logger = logging.getLogger(__name__)

# Longer than any pause of beat: a certificate that expired while beat was down is still seen.
EXPIRY_WINDOW = datetime.timedelta(days=7)


def catch_up(now: datetime.datetime | None = None) -> int:
    """Settles the status of every domain one of whose certificates expired recently and whose
    status still says it is served (or, Let's Encrypt disabled, does not say nothing is);
    returns how many changed."""
    now = now or timezone.now()
    expired = Certificate.objects.filter(not_after__gt=now - EXPIRY_WINDOW, not_after__lte=now)
    domains = Domain.objects.filter(pk__in=expired.values("domain_id")).filter(
        Q(status__in=[DomainStatus.IN_USE, DomainStatus.NOT_USED])
        | Q(letsencrypt_enabled=False) & ~Q(last_error=NOTHING_SERVED)
    )
    # Per domain, the certificate that expired last names what happened.
    latest = dict(
        expired.filter(domain_id__in=domains.values("pk"))
        .order_by("domain_id", "not_after")
        .values_list("domain_id", "source")
    )
    changed = 0
    for pk, source in latest.items():
        what = "the custom certificate" if source == CertificateSource.CUSTOM else "the certificate"
        changed += settle_status(pk, f"{what} expired", now)
    if changed:
        logger.info("expiry: %d domain(s) now say what is served", changed)
    return changed


def prune_expired_certificates(now: datetime.datetime | None = None, batch: int = 1000) -> int:
    """Deletes Let's Encrypt certificates, with their sealed keys, that ended more than
    CERTIFICATE_RETENTION_DAYS ago and that nothing will renew (a newer one replaced them, or Let's
    Encrypt was turned off): `renew_at` is null. A certificate whose renewal keeps failing stays,
    since the renewal sweep works from it; custom certificates stay until their owner replaces or
    removes them. The issuance ledger (quota) keeps its own rows. Returns how many went."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(days=settings.CERTIFICATE_RETENTION_DAYS)
    gone = Certificate.objects.filter(
        source=CertificateSource.LETSENCRYPT, not_after__lte=cutoff, renew_at__isnull=True
    )
    total = 0
    while ids := list(gone.values_list("pk", flat=True)[:batch]):
        _, deleted = gone.filter(pk__in=ids).delete()
        total += deleted.get(Certificate._meta.label, 0)
    if total:
        logger.info("pruned %d Let's Encrypt certificate(s) that ended before %s", total, cutoff)
    return total
