"""A page of domains as the API shows them, with a constant number of queries and Redis round
trips whatever the page's size: the served certificates in one query, the platform's suffixes in
one, the quota overrides in one, and every registered domain's tokens in one Redis pipeline."""

from __future__ import annotations

import datetime

from django.db.models import Q
from django.utils import timezone

from certificates.models import Certificate, CertificateSource
from domains.models import Domain, DomainStatus, Region
from domains.names import to_unicode
from domains.ownership import ownership_record
from domains.services import target_in
from domains.targeting import records_to_add
from workers.quota_policy import quota_of


def _served(domains: list[Domain], now: datetime.datetime) -> tuple[dict[int, Certificate], set[int]]:
    """The certificate served for each domain now (custom first, then the newest Let's Encrypt one
    if enabled), and the domains that hold a custom certificate (valid or not), in one query."""
    enabled = {domain.pk: domain.letsencrypt_enabled for domain in domains}
    rows = (
        Certificate.objects.filter(domain_id__in=list(enabled))
        .filter(Q(source=CertificateSource.CUSTOM) | Q(not_before__lte=now, not_after__gt=now))
        .only("domain_id", "source", "sans", "issuer", "not_before", "not_after", "fingerprint_sha256")
        .order_by("domain_id", "-not_after")
    )
    served: dict[int, Certificate] = {}
    custom: set[int] = set()
    for cert in rows:
        valid = cert.not_before <= now < cert.not_after
        if cert.source == CertificateSource.CUSTOM:
            custom.add(cert.domain_id)
            if valid:
                served[cert.domain_id] = cert
        elif valid and enabled[cert.domain_id]:
            current = served.get(cert.domain_id)
            if current is None:
                served[cert.domain_id] = cert
    return served, custom


def _certificate(cert: Certificate | None) -> dict | None:
    if cert is None:
        return None
    return {
        "source": cert.source,
        "sans": list(cert.sans),
        "issuer": cert.issuer,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "fingerprint_sha256": cert.fingerprint_sha256,
    }


def _dns(domain: Domain, records: list[str]) -> dict:
    if not domain.letsencrypt_enabled:
        return {
            "ok": None,
            "message": "not checked: Let's Encrypt is disabled for this domain",
            "records": records,
        }
    if domain.status == DomainStatus.PENDING_DNS:
        message = domain.last_error or "not checked yet"
        return {"ok": False, "message": message, "records": records}
    if domain.status == DomainStatus.ACTION_REQUIRED:
        return {"ok": None, "message": domain.last_error, "records": records}
    return {"ok": True, "message": "the domain points at the platform", "records": records}


def present_domains(domains: list[Domain], now: datetime.datetime | None = None) -> list[dict]:
    """The API's view of each domain of `domains` (fetched with select_related("app__region"))."""
    now = now or timezone.now()
    if not domains:
        return []
    served, custom = _served(domains, now)
    suffixes = tuple(Region.objects.values_list("domain_suffix", flat=True))
    quotas = {
        q.registered_domain: q
        for q in quota_of(sorted({d.registered_domain for d in domains if d.registered_domain}))
    }
    shown = []
    for domain in domains:
        target = target_in(domain.app.region, domain.app.name, suffixes)
        quota = quotas.get(domain.registered_domain)
        shown.append(
            {
                "name": domain.name,
                "unicode_name": to_unicode(domain.name),
                "app": domain.app.name,
                "status": domain.status,
                "status_label": domain.get_status_display(),
                "letsencrypt": domain.letsencrypt_enabled,
                "custom_certificate": domain.pk in custom,
                "certificate": _certificate(served.get(domain.pk)),
                "dns": _dns(domain, records_to_add(domain.name.removeprefix("*."), target)),
                "ownership": {
                    "verified": domain.ownership_verified_at is not None,
                    "verified_at": domain.ownership_verified_at,
                    "record": ownership_record(domain.name, domain.ownership_token),
                    "help": "Needed unless the domain is a CNAME to "
                    f"{target.app_hostname}: the record proves the domain is this app's.",
                },
                "next_attempt_at": domain.next_attempt_at,
                "last_error": domain.last_error,
                "quota": None
                if quota is None
                else {
                    "registered_domain": quota.registered_domain,
                    "limit": quota.capacity,
                    "period_seconds": quota.period_seconds,
                    "tokens_left": quota.tokens_left,
                    "next_token_at": quota.next_token_at,
                },
                "created": domain.created,
            }
        )
    return shown
