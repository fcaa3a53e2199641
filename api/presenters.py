"""A page of domains as the API shows them, with a constant number of queries and Redis round
trips whatever the page's size: the served certificates in one query, the platform's suffixes in
one, the quota overrides in one, and every registered domain's tokens in one Redis pipeline."""

from __future__ import annotations

import datetime

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import (
    Exists,
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.functions import JSONObject
from django.utils import timezone

from certificates.issuers import label as issuer_label
from certificates.models import Certificate, CertificateSource
from certificates.serving import in_serving_order
from domains.models import Domain, DomainStatus, Region
from domains.names import to_unicode
from domains.ownership import ownership_record
from domains.profiles import effective_profile
from domains.quota_policy import quota_of
from domains.records import records_for
from domains.targeting import target_in


def _served_json(now: datetime.datetime) -> Subquery:
    """The certificate served now for the outer domain, as one JSON object computed by PostgreSQL
    in the page's own query."""
    return Subquery(
        in_serving_order(now)
        .filter(domain_id=OuterRef("pk"))
        .values(
            json=JSONObject(
                source="source",
                sans="sans",
                issuer="issuer",
                not_before="not_before",
                not_after="not_after",
                fingerprint_sha256="fingerprint_sha256",
                renew_at="renew_at",
                ari=JSONObject(
                    window_start="ari_window_start",
                    window_end="ari_window_end",
                    explanation_url="ari_explanation_url",
                    checked_at="ari_checked_at",
                    next_check="ari_next_check",
                    error="ari_error",
                ),
                profile="profile",
                directory="account__directory_url",
            )
        )[:1]
    )


# Revoked certificates a domain shows (newest first); older ones are in its history.
REVOKED_SHOWN = 10


def _revoked_json() -> ArraySubquery:
    """The domain's revoked certificates still stored, newest first, as a JSON array computed in
    the page's own query."""
    return ArraySubquery(
        Certificate.objects.filter(domain_id=OuterRef("pk"), revoked_at__isnull=False)
        .order_by("-revoked_at", "-pk")
        .values(
            json=JSONObject(
                serial="serial",
                fingerprint_sha256="fingerprint_sha256",
                not_after="not_after",
                revoked_at="revoked_at",
                reason="revocation_reason",
            )
        )[:REVOKED_SHOWN]
    )


def _revoked(rows: list[dict] | None) -> list[dict]:
    return [
        {**row, "not_after": _utc_text(row["not_after"]), "revoked_at": _utc_text(row["revoked_at"])}
        for row in rows or []
    ]


def _utc_text(value: str) -> str:
    """A timestamp PostgreSQL wrote into JSON, as DRF writes every other one: UTC with Z, and six
    digits of microseconds unless there are none (PostgreSQL drops a fraction's trailing zeros,
    so the same instant would read differently from one field to the next)."""
    moment = datetime.datetime.fromisoformat(value).astimezone(datetime.UTC)
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_ARI_TIMES = ("window_start", "window_end", "checked_at", "next_check")


def _certificate(served: dict | None) -> dict | None:
    if served is None:
        return None
    directory = served.pop("directory", None)
    shown = {
        **served,
        # The issuer's name in ACME_ISSUERS (its directory's host once no longer configured).
        "issued_by": issuer_label(directory) if directory else "",
        "not_before": _utc_text(served["not_before"]),
        "not_after": _utc_text(served["not_after"]),
    }
    if "renew_at" in served:
        shown["renew_at"] = _optional_utc_text(served["renew_at"])
    ari = served.get("ari")
    if ari is not None:
        # ACME Renewal Information is a Let's Encrypt certificate's: null for a custom one.
        shown["ari"] = (
            {**ari, **{key: _optional_utc_text(ari.get(key)) for key in _ARI_TIMES}}
            if served.get("source") == CertificateSource.LETSENCRYPT
            else None
        )
    return shown


def _optional_utc_text(value: str | None) -> str | None:
    return None if value is None else _utc_text(value)


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
    if domain.ca_unpause_url:
        # Not a DNS matter (the CA paused the name): last_error says so; the URL is the operators'.
        return {
            "ok": None,
            "message": "not checked while Let's Encrypt has this name paused",
            "records": records,
        }
    if domain.status == DomainStatus.ACTION_REQUIRED:
        return {"ok": None, "message": domain.last_error, "records": records}
    return {"ok": True, "message": "the domain points at the platform", "records": records}


STATUS_LABELS = dict(DomainStatus.choices)


def present_domains(domains: list[Domain], now: datetime.datetime | None = None) -> list[dict]:
    """The API's view of each domain of `domains`, read through `with_served` (each with its `app`
    and the app's `region` set)."""
    now = now or timezone.now()
    if not domains:
        return []
    suffixes = tuple(Region.objects.values_list("domain_suffix", flat=True))
    quotas = {
        q.registered_domain: q
        for q in quota_of(sorted({d.registered_domain for d in domains if d.registered_domain}))
    }
    targets = {}
    shown = []
    for domain in domains:
        app = domain.app
        target = targets.get(app.pk)
        if target is None:
            target = targets[app.pk] = target_in(app.region, app.name, suffixes)
        quota = quotas.get(domain.registered_domain)
        name = domain.name
        shown.append(
            {
                "name": name,
                "unicode_name": to_unicode(name) if "xn--" in name else name,
                "app": app.name,
                "status": domain.status,
                "status_label": STATUS_LABELS.get(domain.status, domain.status),
                "letsencrypt": domain.letsencrypt_enabled,
                "profile": domain.acme_profile,
                "effective_profile": effective_profile(domain.acme_profile),
                "issuer": domain.issuer,
                "custom_certificate": domain.has_custom,
                "certificate": _certificate(domain.served),
                "revoked_certificates": _revoked(getattr(domain, "revoked", None)),
                "dns": _dns(domain, records_for(name, target)),
                "ownership": {
                    "verified": domain.ownership_verified_at is not None,
                    "verified_at": domain.ownership_verified_at,
                    "record": ownership_record(name, domain.ownership_token),
                    "help": f"Needed unless the domain is a CNAME to {target.app_hostname}: "
                    "the record proves the domain is this app's.",
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


# What a page of domains reads: the fields the presenter shows, nothing else.
PAGE_FIELDS = (
    "pk",
    "name",
    "registered_domain",
    "status",
    "letsencrypt_enabled",
    "acme_profile",
    "issuer",
    "next_attempt_at",
    "last_error",
    "ownership_token",
    "ownership_verified_at",
    "ca_unpause_url",
    "created",
    "app_id",
)


def with_served(domains: QuerySet[Domain], now: datetime.datetime | None = None) -> QuerySet[Domain]:
    """`domains` with what the presenter needs of their certificates, computed in the same query:
    the served one as JSON (`served`), whether a custom one is uploaded (`has_custom`), and the
    revoked ones (`revoked`)."""
    now = now or timezone.now()
    custom = Certificate.objects.filter(domain_id=OuterRef("pk"), source=CertificateSource.CUSTOM)
    return domains.only(*PAGE_FIELDS).annotate(
        served=_served_json(now), has_custom=Exists(custom), revoked=_revoked_json()
    )


def domain_page(app, now: datetime.datetime | None = None) -> QuerySet[Domain]:
    """The domain list's queryset for `app`, by name: the fields the API shows and the served
    certificate, in one query; each row's `app` is the given one (no join)."""
    return with_served(Domain.objects.filter(app=app), now).order_by("name")
