"""Which certificate a name is served with, decided from validity at the moment of the question.

No sweep has to run for a switch to happen: a custom certificate is served while it is valid,
and the newest valid Let's Encrypt certificate otherwise (if Let's Encrypt is enabled for the
domain). Statuses and history follow on the next tick (workers/expiry.py).
"""

from __future__ import annotations

import datetime

from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone

from certificates.models import Certificate, CertificateSource


def servable_source() -> Q:
    """A custom certificate, or a Let's Encrypt one while Let's Encrypt is on for its domain; never
    a revoked one (revoke and replace: its successor may end sooner, under a shorter profile)."""
    return (Q(source=CertificateSource.CUSTOM) | Q(domain__letsencrypt_enabled=True)) & Q(
        revoked_at__isnull=True
    )


def serving_order() -> tuple:
    """The order in which a domain's valid certificates are served: custom first, then newest; two
    ending in the same second (a certificate's validity has a resolution of one second) by the row
    stored last, so every reader of the rule picks the same one."""
    custom_first = Case(
        When(source=CertificateSource.CUSTOM, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    return (custom_first, "-not_after", "-id")


def in_serving_order(now: datetime.datetime) -> QuerySet[Certificate]:
    """The certificates that may be served at `now`, the one served first for each domain: the
    rule itself, for callers that narrow it to one domain (or an OuterRef in a subquery)."""
    return Certificate.objects.filter(servable_source(), not_before__lte=now, not_after__gt=now).order_by(
        *serving_order()
    )


def served_certificate_of(domain_id: int, now: datetime.datetime | None = None) -> Certificate | None:
    """The certificate served for the domain at `now`, or None when nothing valid is there."""
    return in_serving_order(now or timezone.now()).filter(domain_id=domain_id).first()


# The rule of in_serving_order, with a name's own domain before the wildcard one label up, as one
# hand-written statement: this runs on routers' handshakes, where compiling the ORM's CASE
# expressions cost several times the query itself. tests/web/test_routers.py pins it to the rule.
_SERVED_SQL = """
SELECT c.*, d.name AS domain_name, coalesce(ac.directory_url, '') AS directory_url
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
  JOIN domains_app a ON a.id = d.app_id
  LEFT JOIN certificates_acmeaccount ac ON ac.id = c.account_id
WHERE d.name = ANY(%(names)s) AND c.not_before <= %(now)s AND c.not_after > %(now)s
  AND (c.source = %(custom)s OR d.letsencrypt_enabled) AND c.revoked_at IS NULL
  AND (%(all_regions)s OR a.region_id = ANY(%(regions)s))
ORDER BY d.name <> %(name)s, c.source <> %(custom)s, c.not_after DESC, c.id DESC
LIMIT 1
"""


def served_certificate(
    server_name: str, now: datetime.datetime | None = None, regions: list[int] | None = None
) -> Certificate | None:
    """The certificate for a TLS client asking for `server_name` (SNI) at `now`: the domain's own,
    else the wildcard domain one label up (`*.example.com` for `www.example.com`); one query. The
    domain's name is on the result as `domain_name`, its issuer's directory as `directory_url` (empty
    for an uploaded one). With `regions`, only a domain of those
    regions' apps (a router scoped to them never gets another region's key)."""
    now = now or timezone.now()
    name = server_name.strip().rstrip(".").lower()
    names = [name]
    if "." in name:
        names.append("*." + name.split(".", 1)[1])
    params = {
        "names": names,
        "name": name,
        "now": now,
        "custom": CertificateSource.CUSTOM.value,
        "all_regions": regions is None,
        "regions": list(regions or []),
    }
    return next(iter(Certificate.objects.raw(_SERVED_SQL, params)), None)


def has_valid_custom_certificate(domain_id: int, now: datetime.datetime | None = None) -> bool:
    """Whether the domain holds a custom certificate valid at `now` (then it is the served one)."""
    now = now or timezone.now()
    return Certificate.objects.filter(
        domain_id=domain_id, source=CertificateSource.CUSTOM, not_before__lte=now, not_after__gt=now
    ).exists()
