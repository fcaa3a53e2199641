"""What a notification mail says of each event (issue 16): a headline, what happened (the event's
reason, in the words the API and the admin show), the records to add, and what to do."""

from __future__ import annotations

from dataclasses import dataclass

from domains.models import EventType

# A headline per type, after the domain's name.
HEADLINES = {
    EventType.DOMAIN_ACTION_REQUIRED: "needs you to act",
    EventType.DOMAIN_FAILING: "cannot get a certificate",
    EventType.DOMAIN_IN_USE: "is served over HTTPS",
    EventType.DOMAIN_DELETED: "was removed",
    EventType.CERTIFICATE_ISSUED: "has its certificate",
    EventType.CERTIFICATE_RENEWED: "has a renewed certificate",
    EventType.CERTIFICATE_RENEWAL_FAILED: "could not be renewed",
    EventType.CERTIFICATE_EXPIRING: "has a certificate about to end",
    EventType.CERTIFICATE_EXPIRED: "has an expired certificate",
    EventType.CUSTOM_CERTIFICATE_EXPIRING: "has an uploaded certificate about to end",
}

_RETRY = (
    "then retry at once with `certwright -a {app} domains-retry {domain}` "
    "(or POST .../domains/{domain}/retry)"
)

# What to do, per type; None: nothing.
_TODO = {
    EventType.DOMAIN_ACTION_REQUIRED: (
        "Add the records below at your DNS provider (or fix what the reason names). Certwright checks "
        "every minute and carries on by itself once they are visible; " + _RETRY + "."
    ),
    EventType.DOMAIN_FAILING: (
        "Certwright retries by itself, waiting longer after each failure. If the reason names your DNS, "
        "a CAA record or your server, fix it, " + _RETRY + "."
    ),
    EventType.CERTIFICATE_RENEWAL_FAILED: (
        "The current certificate is still served until it ends, and Certwright keeps trying. Check that "
        "the domain still points at the platform (`certwright -a {app} domains-show {domain}`)."
    ),
    EventType.CERTIFICATE_EXPIRING: (
        "Nothing valid follows it yet. Check that the domain still points at the platform "
        "(`certwright -a {app} domains-show {domain}`), or upload a certificate (`domains-ssl`)."
    ),
    EventType.CERTIFICATE_EXPIRED: (
        "Visitors now get a certificate error. Point the domain at the platform again, or upload a "
        "valid certificate (`certwright -a {app} domains-ssl {domain} --cert CERT --key KEY`)."
    ),
}

_CUSTOM_TAKEOVER = (
    "No action is needed: Certwright's Let's Encrypt certificate is served when it ends. Upload a "
    "renewed certificate (`certwright -a {app} domains-ssl {domain} --cert CERT --key KEY`) to keep your own."
)
_CUSTOM_ALONE = (
    "Upload a renewed certificate before then "
    "(`certwright -a {app} domains-ssl {domain} --cert CERT --key KEY`), "
    "or turn Let's Encrypt on for the domain (PATCH .../domains/{domain} with "
    '{{"letsencrypt": true}}), so that its certificate takes over.'
)


@dataclass
class Told:
    """One event as a mail tells it."""

    type: str
    domain: str
    app: str
    headline: str
    reason: str
    records: list[str]
    todo: str
    when: str
    # How many events of this type and domain the line stands for, and the first one's time.
    times: int = 1
    first_when: str = ""


def tell(event) -> Told:
    """How a mail tells `event` (a domains.Event)."""
    values = {"app": event.app_name, "domain": event.domain_name}
    if event.type == EventType.CUSTOM_CERTIFICATE_EXPIRING:
        takes_over = bool((event.data or {}).get("letsencrypt_takes_over"))
        todo = (_CUSTOM_TAKEOVER if takes_over else _CUSTOM_ALONE).format(**values)
    else:
        todo = _TODO.get(event.type, "").format(**values)
    return Told(
        type=event.type,
        domain=event.domain_name,
        app=event.app_name,
        headline=f"{event.domain_name} {HEADLINES.get(event.type, event.type)}",
        reason=event.reason,
        records=[str(record) for record in (event.records or [])],
        todo=todo,
        when=f"{event.created:%Y-%m-%d %H:%M} UTC",
    )
