"""CAA pre-flight (RFC 8659, with RFC 8657's accounturi and validationmethods): would the CA be
allowed to issue for this name? A pure decision over the CAA record set the resolvers found."""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_TAGS = {"issue", "issuewild", "iodef", "issuemail", "issuevmc"}
CRITICAL = 128


@dataclass(frozen=True)
class CaaRecord:
    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


@dataclass(frozen=True)
class CaaDecision:
    allowed: bool
    message: str = ""


def climb(name: str) -> list[str]:
    """The names whose CAA record sets apply to `name`, nearest first: the name, then each parent
    down to (not including) the top-level domain. A wildcard is checked at its base name."""
    labels = name.removeprefix("*.").split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _parse(value: str) -> tuple[str, dict[str, str]]:
    issuer, _, rest = value.partition(";")
    parameters = {}
    for part in rest.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep:
            parameters[key.strip().lower()] = val.strip()
    return issuer.strip().lower(), parameters


def _record_allows(record: CaaRecord, identity: str, account_uri: str, method: str) -> str | None:
    """None when `record` authorizes us; otherwise why not (for the message)."""
    issuer, parameters = _parse(record.value)
    if issuer != identity.lower():
        return "names another CA" if issuer else "forbids every CA"
    if "accounturi" in parameters and parameters["accounturi"] != account_uri:
        return "allows another ACME account only"
    methods = parameters.get("validationmethods")
    if methods is not None and method not in [m.strip() for m in methods.split(",")]:
        return f"does not allow the {method} validation method"
    return None


def suggested_record(owner: str, identity: str, wildcard: bool) -> str:
    tag = "issuewild" if wildcard else "issue"
    return f'{owner}. CAA 0 {tag} "{identity}"'


def evaluate(
    name: str,
    found: tuple[str, list[CaaRecord]] | None,
    *,
    identity: str,
    account_uri: str,
    method: str = "http-01",
) -> CaaDecision:
    """Whether the CA `identity`, for `account_uri` and `method`, may issue for `name`, given the
    nearest CAA record set found while climbing (`(owner, records)`, or None when there is none)."""
    if found is None:
        return CaaDecision(True)
    owner, records = found
    wildcard = name.startswith("*.")
    for record in records:
        if record.flags & CRITICAL and record.tag.lower() not in KNOWN_TAGS:
            return CaaDecision(
                False,
                f"{owner} has a CAA record marked critical that no CA understands ({record}); the CA must "
                f"refuse to issue until it is removed.",
            )
    tag = "issuewild" if wildcard and any(r.tag.lower() == "issuewild" for r in records) else "issue"
    relevant = [r for r in records if r.tag.lower() == tag]
    if not relevant:
        return CaaDecision(True)
    reasons = []
    for record in relevant:
        why = _record_allows(record, identity, account_uri, method)
        if why is None:
            return CaaDecision(True)
        reasons.append(f"{record} {why}")
    add = suggested_record(owner, identity, wildcard)
    return CaaDecision(
        False,
        f"The CAA records of {owner} do not allow {identity} to issue for {name}: {'; '.join(reasons)}. "
        f"Add {add} (or remove the records that forbid it); nothing is requested from the CA until then.",
    )
