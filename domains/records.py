"""The DNS records a customer adds for a domain, as the API, the admin and the events show them: the
records that point it at its app (a CNAME, or A/AAAA at an apex; a wildcard's DNS-01 delegation) and,
until its ownership is proven, the TXT record that proves it."""

from __future__ import annotations

from certificates import dns01
from domains.models import App, Domain, Region
from domains.names import is_wildcard
from domains.ownership import ownership_record
from domains.targeting import Target, records_to_add, target_in


def target_of(app: App) -> Target:
    """Where the domains of `app` must point."""
    return target_in(app.region, app.name, tuple(Region.objects.values_list("domain_suffix", flat=True)))


def records_for(name: str, target: Target) -> list[str]:
    """The records that point `name` at its app: a CNAME for a subdomain (a wildcard included),
    A/AAAA for an apex; for a wildcard, also the CNAME delegating its DNS-01 record."""
    records = records_to_add(name, target)
    if is_wildcard(name) and dns01.enabled() and dns01.delegated(name):
        records.append(dns01.delegation_record(name))
    return records


def dns_records_to_add(domain: Domain) -> list[str]:
    """The records that point `domain` at its app (records_for)."""
    return records_for(domain.name, target_of(domain.app))


def records_of(domain_ids: list[int]) -> dict[int, list[str]]:
    """For each domain of `domain_ids`, the records the customer is asked to add: those that point
    it at its app, then its ownership TXT record while ownership is unproven. Two queries however
    many domains."""
    if not domain_ids:
        return {}
    regions = {region.pk: region for region in Region.objects.all()}
    suffixes = tuple(region.domain_suffix for region in regions.values())
    rows = Domain.objects.filter(pk__in=domain_ids).values_list(
        "pk", "name", "app__name", "app__region_id", "ownership_token", "ownership_verified_at"
    )
    found = {}
    for pk, name, app_name, region_id, token, verified_at in rows:
        records = records_for(name, target_in(regions[region_id], app_name, suffixes))
        if verified_at is None and token:
            records.append(ownership_record(name, token))
        found[pk] = records
    return found
