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

from certificates import dns01
from certificates.acme_client import get_account
from certificates.issuers import CLOSED, HALF_OPEN, OPEN, IssuerMisconfigured, breaker_states, take_probe
from certificates.issuers import by_name as issuer_named
from certificates.issuers import configured as configured_issuers
from certificates.models import AcmeAccount
from config.issuers import IssuerSetting
from domains.caa import evaluate as evaluate_caa
from domains.caa import suggested_record
from domains.models import DomainStatus, Region, WaitingOn
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
    # The issuer the domain is pinned to (empty: any, in order), and those it avoids for now (they
    # failed its last orders on their side).
    pinned: str = ""
    avoid: tuple[str, ...] = ()


def avoided(names: list[str], until: datetime.datetime | None, now: datetime.datetime) -> tuple[str, ...]:
    """The issuers a domain avoids at `now` (none once `until` has passed)."""
    return tuple(names) if names and until is not None and until > now else ()


@dataclass(frozen=True)
class Verdict:
    """The pre-flight's answer for one domain: go ahead (`ok`, `message` says why), or the status
    it stays in and why; `transient` failures are the resolvers', not the customer's."""

    ok: bool
    message: str
    status: str = DomainStatus.PENDING_DNS
    transient: bool = False
    # For `ok`: the account the order is placed with, at the issuer chosen for it.
    account: AcmeAccount | None = None
    issuer: str = ""
    # For a failure: what the domain waits on (domains.models.WaitingOn).
    reason: str = ""


def preflight(rows: list[PreflightRow]) -> dict[int, Verdict]:
    """DNS and CAA for many domains at once: resolves all of them concurrently, then checks CAA
    (with the platform's ACME account URI at each issuer) for those that point at the platform.
    Returns a verdict per domain; an `ok` one names the account (so the issuer) to order with."""
    if not rows:
        return {}
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
    accounts = _Accounts()
    breakers = _Breakers()
    verdicts = {}
    for name, row in by_name.items():
        diagnosis = diagnoses[name]
        if not diagnosis.ok:
            verdicts[row.pk] = Verdict(
                False,
                diagnosis.message,
                transient=diagnosis.transient,
                reason=WaitingOn.RESOLVER if diagnosis.transient else WaitingOn.DNS,
            )
            continue
        published = txt.get(challenge_name(name)) if ownership_txt(name) else None
        if isinstance(published, TxtLookupFailed):
            verdicts[row.pk] = Verdict(
                False, f"{published}; retried in a minute.", transient=True, reason=WaitingOn.RESOLVER
            )
            continue
        if published is not None and row.ownership_token not in published:
            message = ownership_message(name, row.ownership_token, targets[row.pk].app_hostname)
            verdicts[row.pk] = Verdict(
                False, message, DomainStatus.ACTION_REQUIRED, reason=WaitingOn.OWNERSHIP
            )
            continue
        if delegation(name):
            chain = cnames[delegation(name)]
            if isinstance(chain, TxtLookupFailed):
                verdicts[row.pk] = Verdict(
                    False, f"{chain}; retried in a minute.", transient=True, reason=WaitingOn.RESOLVER
                )
                continue
            if dns01.delegation_target(name) not in chain:
                found_text = f"it is a CNAME to {chain[0]}" if chain else "it has no CNAME record"
                message = (
                    f"A wildcard certificate is validated over DNS: add the record "
                    f"{dns01.delegation_record(name)} ({dns01.challenge_owner(name)}: {found_text})."
                )
                verdicts[row.pk] = Verdict(
                    False, message, DomainStatus.ACTION_REQUIRED, reason=WaitingOn.DNS01
                )
                continue
        found = caa[name]
        if isinstance(found, CaaLookupFailed):
            verdicts[row.pk] = Verdict(
                False, f"{found}; retried in a minute.", transient=True, reason=WaitingOn.RESOLVER
            )
            continue
        verdicts[row.pk] = _choose_issuer(row, found, accounts, breakers, diagnosis.message)
    return verdicts


class _Accounts:
    """The platform's account at each issuer, registered (once) when first needed by this pre-flight;
    an issuer whose account cannot be had is remembered with why."""

    def __init__(self) -> None:
        self.found: dict[str, AcmeAccount | str] = {}

    def at(self, issuer: IssuerSetting) -> AcmeAccount | str:
        """The account, or why there is none."""
        if issuer.name not in self.found:
            try:
                self.found[issuer.name] = get_account(issuer.directory_url)
            except IssuerMisconfigured as exc:
                self.found[issuer.name] = str(exc)
            except (messages.Error, requests.RequestException, acme_errors.Error) as exc:
                self.found[issuer.name] = (
                    f"issuer {issuer.name} could not be reached to register the platform's account "
                    f"({type(exc).__name__})"
                )
        return self.found[issuer.name]


class _Breakers:
    """The issuers' circuit breakers (certificates/issuers.py), read once per pre-flight when a
    choice among several issuers needs them."""

    def __init__(self) -> None:
        self.states: dict[str, str] | None = None

    def state(self, name: str) -> str:
        if self.states is None:
            self.states = breaker_states()
        return self.states.get(name, CLOSED)

    def may_use(self, name: str) -> bool:
        """Closed, or half-open and this order is the one probe (the next caller finds it taken)."""
        state = self.state(name)
        if state == HALF_OPEN and take_probe(name):
            self.states[name] = OPEN
            return True
        return state == CLOSED


def _choose_issuer(
    row: PreflightRow, found, accounts: _Accounts, breakers: _Breakers, points: str
) -> Verdict:
    """The issuer of the order for `row`: of the issuers its CAA allows (only the pinned one, when
    it is pinned), the first, in order, whose account the platform has, that the domain does not
    avoid and whose breaker is closed (or this order is its probe). A CAA that allows only a later
    issuer goes to it directly; one that allows none is the customer's to change (every issuer
    named). When every allowed issuer is avoided, the first of them again; when every one is
    failing (its breaker open), or no account anywhere, the check is retried soon."""
    name = row.name
    method = "dns-01" if is_wildcard(name) else "http-01"
    issuers = configured_issuers()
    if row.pinned:
        pinned = issuer_named(row.pinned)
        if pinned is None:
            message = (
                f"{name} is pinned to the certificate authority {row.pinned}, which the platform no longer "
                f"offers: pin it to one of {', '.join(issuer.name for issuer in issuers)}, or unpin it."
            )
            return Verdict(False, message, DomainStatus.ACTION_REQUIRED, reason=WaitingOn.ISSUER)
        issuers = [pinned]
    refusals: list[tuple[IssuerSetting, str]] = []
    unavailable: list[str] = []
    allowed: list[tuple[IssuerSetting, AcmeAccount]] = []
    ok = f"DNS points at the platform ({points})"
    # In order, and no further than the first usable issuer: a later issuer's account is registered
    # (and its CA contacted) only when the order may go there.
    for issuer in issuers:
        account = accounts.at(issuer)
        if isinstance(account, str):
            unavailable.append(account)
            continue
        decisions = [
            evaluate_caa(name, found, identity=identity, account_uri=account.account_url, method=method)
            for identity in issuer.caa_identities
        ]
        if not any(decision.allowed for decision in decisions):
            refusals.append((issuer, decisions[0].message))
            continue
        if len(configured_issuers()) == 1:
            # Nowhere else to go: the breaker is shown, and holds nothing back (each domain already
            # retries a failing CA once a minute, without counting a failure).
            return Verdict(True, ok, account=account, issuer=issuer.name)
        if issuer.name not in row.avoid and breakers.may_use(issuer.name):
            return Verdict(True, ok, account=account, issuer=issuer.name)
        allowed.append((issuer, account))
    for issuer, account in allowed:
        # Every allowed issuer failed this domain lately: the first whose CA is not failing for all
        # (the fail-over paces such a domain to once a minute: workers/order_run.py).
        if breakers.state(issuer.name) == CLOSED:
            return Verdict(True, ok, account=account, issuer=issuer.name)
    if allowed:
        return _all_failing(name, allowed)
    if unavailable:
        # Without the account there is no CAA accounturi check and no order: try again soon.
        return Verdict(
            False, f"{'; '.join(unavailable)}; retried in a minute.", transient=True, reason=WaitingOn.ISSUER
        )
    if len(refusals) == 1:
        return Verdict(False, refusals[0][1], DomainStatus.ACTION_REQUIRED, reason=WaitingOn.CAA)
    owner = found[0]
    named = ", ".join(f"{issuer.name} ({' or '.join(issuer.caa_identities)})" for issuer, _ in refusals)
    add = suggested_record(owner, refusals[0][0].caa_identities[0], name.startswith("*."))
    message = (
        f"The CAA records of {owner} allow none of the platform's certificate authorities to issue for "
        f"{name}: {named}. Add {add} (or one naming another of them); nothing is requested from any CA "
        f"until then. In detail: {refusals[0][1]}"
    )
    return Verdict(False, message, DomainStatus.ACTION_REQUIRED, reason=WaitingOn.CAA)


def _all_failing(name: str, allowed: list[tuple[IssuerSetting, AcmeAccount]]) -> Verdict:
    names = ", ".join(issuer.name for issuer, _ in allowed)
    return Verdict(
        False,
        f"Every certificate authority that may issue for {name} is failing on its side for now ({names}); "
        f"retried in a minute.",
        transient=True,
        reason=WaitingOn.ISSUER,
    )
