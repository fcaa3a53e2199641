"""Which certificates the ARI sweep asks the CA about (workers/ari_checks.py), and asking about some
of them now: the operators' incident response (`manage.py ari_check`, the admin's action)."""

from __future__ import annotations

import datetime

from django.db.models import Q, QuerySet

from certificates.models import Certificate, CertificateSource


def checkable(now: datetime.datetime) -> Q:
    """A certificate whose renewal information is worth asking for at `now`: a Let's Encrypt one
    with an ARI identifier, not expired, not revoked, and still renewed (a replaced certificate has
    no renewal time and no claim; RFC 9773 section 4.3: stop checking once replaced or expired)."""
    return (
        Q(source=CertificateSource.LETSENCRYPT, revoked_at__isnull=True, not_after__gt=now)
        & ~Q(ari_cert_id="")
        & (Q(renew_at__isnull=False) | Q(renewal_claim__isnull=False))
    )


def check_soon(certificates: QuerySet[Certificate], now: datetime.datetime) -> int:
    """Makes the checkable ones of `certificates` due for an ARI check at `now` (the sweep takes
    them on its next tick, or `manage.py ari_check --now` at once); returns how many. One statement."""
    return certificates.filter(checkable(now)).update(ari_next_check=now)
