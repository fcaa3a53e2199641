"""The pre-flight of an order, for a new certificate (the check) and a renewal alike: does the
name point at the platform, is it the app's (ownership), is a wildcard's DNS-01 delegation in place,
and does CAA allow the CA. Many names at once, resolved concurrently; nothing is written here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import requests
from acme import errors as acme_errors
from acme import messages
from django.conf import settings

from certificates import dns01
from certificates.acme_client import get_account
from certificates.models import AcmeAccount
from domains.caa import evaluate as evaluate_caa
from domains.models import DomainStatus, Region
from domains.names import is_wildcard
from domains.ownership import challenge_name, ownership_message
from domains.targeting import Target, diagnose, target_in
from workers.resolver import CaaLookupFailed, TxtLookupFailed, resolve_for_check

# A resolver problem is not the customer's: try again soon, without growing the backoff.
TRANSIENT_RETRY = datetime.timedelta(seconds=60)


def _targets(rows: list[PreflightRow]) -> dict[int, Target]:
    regions = {region.pk: region for region in Region.objects.all()}
    suffixes = tuple(region.domain_suffix for region in regions.values())
    return {row.pk: target_in(regions[row.region_id], row.app_name, suffixes) for row in rows}


@dataclass(frozen=True)
class PreflightRow:
    """What the pre-flight needs of one domain."""

    pk: int
    name: str
    app_name: str
    region_id: int
    # The token its ownership TXT record must hold; empty once ownership is proven (or for a renewal).
    ownership_token: str = ""


@dataclass(frozen=True)
class Verdict:
    """The pre-flight's answer for one domain: go ahead (`ok`, `message` says why), or the status
    it stays in and why; `transient` failures are the resolvers', not the customer's."""

    ok: bool
    message: str
    status: str = DomainStatus.PENDING_DNS
    transient: bool = False


def preflight(rows: list[PreflightRow]) -> tuple[dict[int, Verdict], AcmeAccount | None]:
    """DNS and CAA for many domains at once: resolves all of them concurrently, then checks CAA
    (with the platform's ACME account URI) for those that point at the platform. Returns a verdict
    per domain and the account, when it was needed and reachable."""
    if not rows:
        return {}, None
    targets = _targets(rows)
    by_name = {row.name: row for row in rows}
    accepted = {
        row.name: frozenset({targets[row.pk].app_hostname, targets[row.pk].cname_target}) for row in rows
    }
    diagnoses = {}

    def points_at_platform(lookup) -> bool:
        diagnoses[lookup.name] = diagnose(lookup, targets[by_name[lookup.name].pk])
        return diagnoses[lookup.name].ok

    def ownership_txt(name: str) -> str | None:
        """The TXT record that must prove `name` is this app's, if anything must."""
        row = by_name[name]
        if not row.ownership_token or diagnoses[name].code == "ok_app_cname":
            return None
        return challenge_name(name)

    def delegation(name: str) -> str | None:
        """Where a wildcard's DNS-01 CNAME must be (certificates/dns01.py); none is needed when its
        challenge record lies in the platform's zone, where Certwright publishes it directly."""
        return dns01.challenge_owner(name) if is_wildcard(name) and dns01.delegated(name) else None

    _, caa, txt, cnames = resolve_for_check(
        list(by_name),
        accepted,
        points_at_platform,
        lambda lookup: ownership_txt(lookup.name),
        lambda lookup: delegation(lookup.name),
    )
    account = account_uri = None
    if caa:
        try:
            account = get_account()
            account_uri = account.account_url
        except (messages.Error, requests.RequestException, acme_errors.Error) as exc:
            # Without the account there is no CAA accounturi check and no order: try again soon.
            problem = f"the CA could not be reached to register the platform's account ({type(exc).__name__})"
            caa = {name: CaaLookupFailed(problem) for name in caa}
    verdicts = {}
    for name, row in by_name.items():
        diagnosis = diagnoses[name]
        if not diagnosis.ok:
            verdicts[row.pk] = Verdict(False, diagnosis.message, transient=diagnosis.transient)
            continue
        published = txt.get(challenge_name(name)) if ownership_txt(name) else None
        if isinstance(published, TxtLookupFailed):
            verdicts[row.pk] = Verdict(False, f"{published}; retried in a minute.", transient=True)
            continue
        if published is not None and row.ownership_token not in published:
            message = ownership_message(name, row.ownership_token, targets[row.pk].app_hostname)
            verdicts[row.pk] = Verdict(False, message, DomainStatus.ACTION_REQUIRED)
            continue
        if delegation(name):
            chain = cnames[delegation(name)]
            if isinstance(chain, TxtLookupFailed):
                verdicts[row.pk] = Verdict(False, f"{chain}; retried in a minute.", transient=True)
                continue
            if dns01.delegation_target(name) not in chain:
                found_text = f"it is a CNAME to {chain[0]}" if chain else "it has no CNAME record"
                message = (
                    f"A wildcard certificate is validated over DNS: add the record "
                    f"{dns01.delegation_record(name)} ({dns01.challenge_owner(name)}: {found_text})."
                )
                verdicts[row.pk] = Verdict(False, message, DomainStatus.ACTION_REQUIRED)
                continue
        found = caa[name]
        if isinstance(found, CaaLookupFailed):
            verdicts[row.pk] = Verdict(False, f"{found}; retried in a minute.", transient=True)
            continue
        decision = evaluate_caa(
            name,
            found,
            identity=settings.ACME_CAA_IDENTITY,
            account_uri=account_uri,
            method="dns-01" if is_wildcard(name) else "http-01",
        )
        if decision.allowed:
            verdicts[row.pk] = Verdict(True, f"DNS points at the platform ({diagnosis.message})")
        else:
            verdicts[row.pk] = Verdict(False, decision.message, DomainStatus.ACTION_REQUIRED)
    return verdicts, account
