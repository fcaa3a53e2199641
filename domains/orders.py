"""A domain's certificate orders: creating them (for a new certificate or a renewal), cancelling
them, and the lease every step of an order holds.

The steps themselves run on the workers (workers/order_run.py, workers/acme_steps.py); what is
here is what the domain's own services need too: deleting a domain or turning Let's Encrypt off
cancels its order, and a new order is created by the check and the renewal sweep alike.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from certificates import dns01
from certificates.keys import generate_private_key_pem
from certificates.models import ACTIVE_ORDER_STATES, AcmeAccount, Challenge, ChallengeKind, Order, OrderState
from certificates.sealing import seal
from domains.enqueue import advance_order_later, deactivate_authorizations_later
from domains.locking import lock_domains, lock_orders
from domains.models import Domain, DomainStatus
from domains.names import is_wildcard
from domains.profiles import effective_profile
from domains.quota_policy import refund as refund_quota
from domains.status import StatusWrite, bulk_change_status

logger = logging.getLogger(__name__)

# States in which the CA has certainly not issued anything for the order: finalize not sent yet.
BEFORE_FINALIZE = (OrderState.PENDING, OrderState.AUTHORIZING, OrderState.VALIDATING)


def lease_until(now: datetime.datetime, delay: float = 0) -> datetime.datetime:
    """The end of the lease of a step that starts after `delay` seconds."""
    return now + datetime.timedelta(seconds=delay + settings.ACME_ORDER_LEASE_SECONDS)


def renewal_lease_until(now: datetime.datetime) -> datetime.datetime:
    """How long a certificate whose renewal order runs is left alone by the renewal sweep: the
    order's whole time budget, after which the sweep takes it again (an order that ended without
    a word)."""
    seconds = settings.ACME_ORDER_TIMEOUT_SECONDS + settings.ACME_ORDER_LEASE_SECONDS
    return now + datetime.timedelta(seconds=seconds)


def ended(state: str, now: datetime.datetime, problem: str | None = None) -> dict:
    """The fields of an order that ends in `state`: no lease, and its key purged."""
    fields = {"state": state, "lease_token": None, "lease_until": None, "private_key": None}
    fields.update(finished=now, updated=now)
    if problem is not None:
        fields["problem"] = problem
    return fields


@dataclass(frozen=True)
class Start:
    """An order to create: for a claimed domain (a new certificate), or for a claimed certificate
    (`renews`: its renewal), with the quota reservation it spent, the CA profile it asks for
    (effective_profile: "" is the CA's default) and the ARI identifier of the certificate it
    `replaces` (RFC 9773; "" names none)."""

    domain_id: int
    name: str
    reason: str = ""
    reservation: uuid.UUID | None = None
    renewal: bool = False
    renews: int | None = None
    # Revoke and replace: the RFC 5280 reason the renewed certificate is revoked with once this
    # order's certificate is stored and served (empty: it is not revoked).
    revoke_replaced: str = ""
    profile: str = ""
    replaces: str = ""


def fresh_keys(starts: list[Start]) -> dict[int, object]:
    """A new sealed private key per start, by domain: made before the claims are locked (an RSA
    key takes a while), so the transaction that creates the orders stays short."""
    return {start.domain_id: seal(generate_private_key_pem(settings.ACME_KEY_TYPE)) for start in starts}


def create_orders(
    starts: list[Start], keys: dict[int, object], account: AcmeAccount, now: datetime.datetime
) -> dict[int, Order]:
    """Creates one order per start, with its key from `keys` (fresh_keys), and sends its first step
    after commit; returns them by domain. A domain that already has an order in flight (the unique
    order_one_in_flight_per_domain) is skipped alone and its reservation refunded after commit.
    Call inside the transaction that holds the starts' claims: one statement for the whole batch
    unless a domain is skipped."""
    if not starts:
        return {}
    rows = [
        Order(
            domain_id=start.domain_id,
            account=account,
            names=[start.name],
            is_renewal=start.renewal,
            renews_id=start.renews,
            revoke_replaced=start.revoke_replaced,
            quota_reservation=start.reservation,
            profile=start.profile,
            replaces=start.replaces,
            private_key=keys[start.domain_id],
            lease_token=uuid.uuid4(),
            lease_until=lease_until(now),
            created=now,
        )
        for start in starts
    ]
    try:
        with transaction.atomic():
            created = Order.objects.bulk_create(rows)
    except IntegrityError:
        created = []
        for start, row in zip(starts, rows, strict=True):
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
                created.append(row)
            except IntegrityError:
                transaction.on_commit(
                    lambda s=start: refund_quota(
                        s.reservation, [s.name], account.pk, "the domain already had an order"
                    )
                )
    for order in created:
        advance_order_later(order.pk, str(order.lease_token), OrderState.PENDING)
    return {order.domain_id: order for order in created}


def start_orders(
    starts: list[Start], claim_token, account: AcmeAccount, now: datetime.datetime | None = None
) -> int:
    """Orders a new certificate for each claimed domain still held by `claim_token` and moves it to
    `creating`, in a constant number of queries for the batch; returns how many orders started.
    The quota of a domain no longer held, or that already had an order, is refunded."""
    if not starts:
        return 0
    now = now or timezone.now()
    by_domain = {start.domain_id: start for start in starts}
    keys = fresh_keys(starts)
    with transaction.atomic():
        held = {}
        for domain in lock_domains(list(by_domain), claim_token=claim_token).only(
            "pk", "consecutive_failures", "acme_profile"
        ):
            held[domain.pk] = domain.consecutive_failures
            # The profile as the domain has it now, read under its lock.
            by_domain[domain.pk] = replace(
                by_domain[domain.pk], profile=effective_profile(domain.acme_profile)
            )
        orders = create_orders([by_domain[pk] for pk in held], keys, account, now)
        bulk_change_status(
            [
                StatusWrite(pk, DomainStatus.CREATING, by_domain[pk].reason, "", held[pk], None, None)
                for pk in orders
            ],
            holding=claim_token,
            now=now,
        )
        # A domain that had an order already: leave that order be, and release the claim.
        skipped = set(held) - set(orders)
        if skipped:
            Domain.objects.filter(pk__in=skipped, claim_token=claim_token).update(claim_token=None)
    for pk in set(by_domain) - set(held):
        start = by_domain[pk]
        refund_quota(start.reservation, [start.name], account.pk, "the domain's check was taken over")
    return len(orders)


def published_challenges(order_id: int) -> list[str]:
    """The wildcard names whose DNS-01 records the order may have published."""
    return list(
        Challenge.objects.filter(order_id=order_id, kind=ChallengeKind.DNS_01)
        .exclude(key_authorization="")
        .values_list("identifier", flat=True)
    )


def clean_challenge_records(order: Order, identifiers: list[str] | None = None) -> None:
    """Removes the DNS-01 records an ended order published (a record left behind is harmless: the
    next order of the name replaces it, so a failure here is only logged). An order without a
    wildcard published none and costs no query."""
    if not any(is_wildcard(name) for name in order.names):
        return
    for identifier in published_challenges(order.pk) if identifiers is None else identifiers:
        try:
            dns01.provider().remove(dns01.txt_owner(identifier))
        except dns01.PublishFailed as exc:
            logger.warning("order %s: the DNS-01 record of %s stays: %s", order.pk, identifier, exc)


def cancel_orders_of(domain_id: int, now: datetime.datetime | None = None) -> None:
    """Cancels the domain's order in flight (its tokens stop being served at once) and deactivates
    its pending authorizations at the CA after commit. Call inside the deleting transaction."""
    now = now or timezone.now()
    orders = list(lock_orders(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES))
    # A domain waiting for its quota token gives the booked token back.
    waiting = Domain.objects.filter(pk=domain_id).values("quota_reservation", "name").first()
    if waiting and waiting["quota_reservation"]:
        transaction.on_commit(
            lambda: refund_quota(
                waiting["quota_reservation"],
                [waiting["name"]],
                None,
                "the domain no longer wants a certificate",
            )
        )
    for order in orders:
        if order.state in BEFORE_FINALIZE:
            # Its authorizations are deactivated below, so the CA can never issue for it.
            transaction.on_commit(
                lambda o=order: refund_quota(
                    o.quota_reservation, o.names, o.account_id, "the order was cancelled"
                )
            )
        urls = list(
            Challenge.objects.filter(order=order)
            .exclude(authorization_status__in=["valid", "invalid", "deactivated"])
            .values_list("authorization_url", flat=True)
        )
        Order.objects.filter(pk=order.pk).update(**ended(OrderState.CANCELLED, now))
        # The rows may be gone with the domain by then: read the names now.
        published = published_challenges(order.pk) if any(is_wildcard(n) for n in order.names) else []
        if published:
            transaction.on_commit(lambda o=order, p=published: clean_challenge_records(o, p))
        if urls:
            deactivate_authorizations_later(order.account_id, urls)
