"""Names the CA paused for the platform's account, and lifting the pause.

Let's Encrypt pauses an identifier for an account after 1,152 consecutive failed validations; from
then on every new order naming it is refused (a 429 rateLimited: "Your account is temporarily
prevented from requesting certificates for NAME and possibly others. Please visit: URL") until
someone holding the account visits that self-service URL. Waiting does not lift it, so a paused
domain is sent nothing at all: `action_required`, no next attempt, its certificate (still served)
not renewed, and "retry now" refused, until an operator who has visited the URL marks it unpaused.

The URL stays with the operators (admin, `manage.py unpause_domains`): it carries a token of the
platform's ACME account that lifts the pause of up to 50,000 of the account's names at once, every
customer's, so it is never shown to a customer (their API says the operators must lift it).
"""

from __future__ import annotations

import datetime

from django.db import transaction
from django.utils import timezone

from certificates.models import Certificate, CertificateSource
from domains.claims import claim_check_now, renew_now
from domains.locking import lock_domains
from domains.models import Domain, DomainStatus, WaitingOn
from domains.status import change_status, settle_status


class DomainPaused(Exception):
    """The CA paused the domain's name: nothing may be sent for it until an operator unpauses it."""


def paused_message(name: str) -> str:
    """What a paused domain says (customers read it too: no unpause URL here)."""
    return (
        f"Let's Encrypt has paused certificate requests for {name} from the platform's account after "
        "too many failed validations in a row. Nothing is requested for this name until the "
        "platform's operators lift the pause at Let's Encrypt (the link is in their admin) and mark "
        "the domain unpaused."
    )


def paused_refusal(name: str, what: str) -> str:
    """Why `what` (an action a customer asked for) is not done for a paused domain."""
    return (
        f"{name}: Let's Encrypt has paused certificate requests for this name; only the platform's "
        'operators can lift the pause (at Let\'s Encrypt, then with "Mark unpaused at the CA"), '
        f"so {what} would be refused by the CA"
    )


def retry_refusal(name: str) -> str:
    """Why "retry now" does nothing for a paused domain."""
    return paused_refusal(name, "a retry")


def pause_domains(domain_ids: list[int], unpause_url: str, now: datetime.datetime | None = None) -> list[int]:
    """The CA paused these domains' names: each goes to `action_required` with the URL kept for the
    operators, no next attempt and no renewal scheduled (its certificate stays served). Returns the
    ids newly paused. Call inside the transaction that ends the refused order."""
    now = now or timezone.now()
    paused = []
    with transaction.atomic(savepoint=False):
        for domain_id, name, was_paused in lock_domains(domain_ids).values_list("pk", "name", "ca_paused_at"):
            message = paused_message(name)
            change_status(
                domain_id,
                DomainStatus.ACTION_REQUIRED,
                f"Let's Encrypt paused {name} for the platform's account; an operator must lift the pause",
                now=now,
                ca_unpause_url=unpause_url,
                ca_paused_at=was_paused or now,
                next_attempt_at=None,
                claim_token=None,
                last_error=message,
                waiting_on=WaitingOn.PAUSED,
            )
            Certificate.objects.filter(domain_id=domain_id, source=CertificateSource.LETSENCRYPT).update(
                renew_at=None, renewal_claim=None, renewal_error=message
            )
            if was_paused is None:
                paused.append(domain_id)
    return paused


def unpause_domains(domain_ids: list[int], now: datetime.datetime | None = None) -> list[str]:
    """An operator lifted the CA's pause of these domains (at the URL it gave): the pause is
    forgotten, the backoff reset, and each domain is due now (its renewal when it has a Let's
    Encrypt certificate, else its check). Returns the names unpaused; domains not paused are left
    alone."""
    now = now or timezone.now()
    unpaused = []
    for domain_id in sorted(set(domain_ids)):
        with transaction.atomic():
            domain = lock_domains([domain_id]).exclude(ca_unpause_url="").first()
            if domain is None:
                continue
            cleared = {"ca_unpause_url": "", "ca_paused_at": None, "consecutive_failures": 0}
            cert = (
                Certificate.objects.filter(domain_id=domain_id, source=CertificateSource.LETSENCRYPT)
                .order_by("-not_after")
                .values_list("pk", flat=True)
                .first()
            )
            reason = "an operator lifted Let's Encrypt's pause"
            if not domain.letsencrypt_enabled:
                Domain.objects.filter(pk=domain_id).update(updated=now, **cleared)
            elif cert is not None:
                # Its renewal was paused: due now; the domain says again what it serves.
                Certificate.objects.filter(pk=cert).update(renew_at=now, renewal_failures=0, renewal_error="")
                change_status(
                    domain_id,
                    DomainStatus.IN_USE,
                    reason,
                    now=now,
                    last_error="",
                    next_attempt_at=None,
                    **cleared,
                )
                settle_status(domain_id, reason, now)
                renew_now(domain_id, now)
            else:
                change_status(
                    domain_id,
                    DomainStatus.PENDING_DNS,
                    f"{reason}; checking its DNS",
                    now=now,
                    last_error="",
                    next_attempt_at=now,
                    **cleared,
                )
                claim_check_now(domain_id, reset_backoff=True, now=now)
        unpaused.append(domain.name)
    return unpaused
