"""ACME issuance as a persisted state machine: one short, idempotent step per task.

An order row says which step runs next (its state). A step claims the row's lease, talks to the
CA without holding a database transaction, then records what it learned and hands the lease to the
next step in one transaction, and the next task is sent after that commit. A task delivered twice
finds the lease taken and does nothing; a task lost with the broker or a worker killed mid-step
leaves a lease that expires, and the periodic re-drive continues from the recorded state. Every
step re-reads the CA's view of the order first, so repeating a step never repeats its effect
(a second finalize, a second certificate).
"""

from __future__ import annotations

import datetime
import logging
import re
import time
import uuid
from dataclasses import dataclass

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from certificates import dns01
from certificates.acme_client import client_for, forget_clients, get_account, reset_account
from certificates.keys import generate_private_key_pem, make_csr_pem
from certificates.models import (
    ACTIVE_ORDER_STATES,
    AcmeAccount,
    Certificate,
    CertificateSource,
    Challenge,
    ChallengeKind,
    Issuance,
    Order,
    OrderState,
    renewal_due,
)
from certificates.sealing import seal
from certificates.serving import has_valid_custom_certificate
from certificates.verify import ChainRejected, verify_issued_chain
from domains.backoff import retry_delay
from domains.models import Domain, DomainEvent, DomainStatus
from domains.names import is_wildcard
from domains.status import StatusWrite, bulk_change_status, change_status
from domains.enqueue import advance_order_later, deactivate_authorizations_later
from workers.failpoints import failpoint
from domains.quota_policy import commit as commit_quota
from domains.quota_policy import refund as refund_quota
from domains.quota_policy import registered_domains, sync_registered_domains, when

logger = logging.getLogger(__name__)

# ACME problem types worth retrying as they are: the request was not processed.
RETRYABLE_PROBLEMS = {"badNonce", "serverInternal"}
# How long one task may keep running steps that need no wait before it hands over to a new task.
INLINE_BUDGET_SECONDS = 20
# States in which the CA has certainly not issued anything for the order: finalize not sent yet.
BEFORE_FINALIZE = (OrderState.PENDING, OrderState.AUTHORIZING, OrderState.VALIDATING)
# Let's Encrypt's 429 for its per-registered-domain limit: "too many certificates (50) already
# issued for "example.com" in the last 168h0m0s, retry after ...". Its exact-set limit says "for
# this exact set of identifiers" instead, and new-order or failed-authorization limits say neither.
REGISTERED_DOMAIN_LIMIT = re.compile(
    r"too many certificates\b.*\balready issued for(?!\s*this exact set)", re.I
)


class OrderFailed(Exception):
    """The CA refused or failed the order; the message is for the customer. `issued_nothing`
    says the CA certainly issued no certificate (None: judge from the order's state)."""

    def __init__(self, message: str, issued_nothing: bool | None = None) -> None:
        super().__init__(message)
        self.issued_nothing = issued_nothing


@dataclass(frozen=True)
class Start:
    """A claimed domain whose order is to start, with the quota reservation it spent."""

    domain_id: int
    reason: str
    reservation: uuid.UUID | None = None
    renewal: bool = False
    name: str = ""


@dataclass(frozen=True)
class Next:
    """What a step decided: the state to move to, and how long to wait before running it."""

    state: str
    delay: float = 0.0
    fields: dict | None = None


# --- starting an order ------------------------------------------------------------------------


def start_order(
    domain_id: int,
    claim_token,
    reason: str,
    now: datetime.datetime | None = None,
    reservation: uuid.UUID | None = None,
    renewal: bool = False,
    name: str = "",
) -> Order | None:
    """Creates the domain's order (status `creating`) and sends its first step; None if the domain
    is no longer claimed by `claim_token` or already has an order in flight (then the quota
    `reservation` it spent is refunded)."""
    now = now or timezone.now()
    account = get_account()
    key = seal(generate_private_key_pem(settings.ACME_KEY_TYPE))
    token = uuid.uuid4()
    with transaction.atomic():
        domain = Domain.objects.select_for_update().filter(pk=domain_id, claim_token=claim_token).first()
        if domain is None:
            transaction.on_commit(
                lambda: refund_quota(reservation, [name], account.pk, "the domain's check was taken over")
            )
            return None
        try:
            with transaction.atomic():
                order = Order.objects.create(
                    domain=domain,
                    account=account,
                    names=[domain.name],
                    is_renewal=renewal,
                    quota_reservation=reservation,
                    private_key=key,
                    lease_token=token,
                    lease_until=now + datetime.timedelta(seconds=settings.ACME_ORDER_LEASE_SECONDS),
                    created=now,
                )
        except IntegrityError:
            # order_one_in_flight_per_domain: someone already started one; leave it be.
            Domain.objects.filter(pk=domain_id, claim_token=claim_token).update(claim_token=None)
            transaction.on_commit(
                lambda: refund_quota(
                    reservation, [domain.name], account.pk, "the domain already had an order"
                )
            )
            return None
        changed = change_status(
            domain_id,
            DomainStatus.CREATING,
            reason,
            holding=claim_token,
            now=now,
            next_attempt_at=None,
            last_checked_at=now,
            claim_token=None,
            quota_reservation=None,
            last_error="",
        )
        if not changed:
            raise RuntimeError("a claimed domain could not be moved to creating")
        advance_order_later(order.pk, str(token), OrderState.PENDING)
    return order


def start_orders(
    claimed: list[Start],
    claim_token,
    now: datetime.datetime | None = None,
    account: AcmeAccount | None = None,
) -> int:
    """start_order for many claimed domains at once: a constant number of queries for the batch.
    Returns how many orders it started; the quota of a domain that was not started is refunded."""
    if not claimed:
        return 0
    now = now or timezone.now()
    account = account or get_account()
    starts = {start.domain_id: start for start in claimed}
    keys = {domain_id: seal(generate_private_key_pem(settings.ACME_KEY_TYPE)) for domain_id in starts}
    lease_until = now + datetime.timedelta(seconds=settings.ACME_ORDER_LEASE_SECONDS)
    try:
        with transaction.atomic():
            held = list(
                Domain.objects.select_for_update()
                .filter(pk__in=list(starts), claim_token=claim_token)
                .values_list("pk", "name", "consecutive_failures")
            )
            orders = Order.objects.bulk_create(
                [
                    Order(
                        domain_id=pk,
                        account=account,
                        names=[name],
                        is_renewal=starts[pk].renewal,
                        quota_reservation=starts[pk].reservation,
                        private_key=keys[pk],
                        lease_token=uuid.uuid4(),
                        lease_until=lease_until,
                        created=now,
                    )
                    for pk, name, _ in held
                ]
            )
            bulk_change_status(
                [
                    StatusWrite(pk, DomainStatus.CREATING, starts[pk].reason, "", failures, None, None)
                    for pk, _, failures in held
                ],
                holding=claim_token,
                now=now,
            )
            for order in orders:
                advance_order_later(order.pk, str(order.lease_token), OrderState.PENDING)
    except IntegrityError:
        # A domain already had an order in flight (order_one_in_flight_per_domain): go one by one,
        # so that only that domain is skipped.
        return sum(
            1
            for start in claimed
            if start_order(
                start.domain_id, claim_token, start.reason, now, start.reservation, start.renewal, start.name
            )
        )
    lost = set(starts) - {pk for pk, _, _ in held}
    for pk in lost:
        refund_quota(
            starts[pk].reservation, [starts[pk].name], account.pk, "the domain's check was taken over"
        )
    return len(orders)


# --- the lease --------------------------------------------------------------------------------


def _ended(state: str, now: datetime.datetime, problem: str | None = None) -> dict:
    """The fields of an order that ends in `state`: no lease, and its key purged."""
    fields = {"state": state, "lease_token": None, "lease_until": None, "private_key": None}
    fields.update(finished=now, updated=now)
    if problem is not None:
        fields["problem"] = problem
    return fields


def _lease_until(now: datetime.datetime, delay: float = 0) -> datetime.datetime:
    return now + datetime.timedelta(seconds=delay + settings.ACME_ORDER_LEASE_SECONDS)


def claim(order_id: int, token: str | None, now: datetime.datetime) -> uuid.UUID | None:
    """Takes the order's lease for one step: with the token the previous step handed over, or
    because the lease expired. Returns the new token, or None when another task holds it."""
    held = uuid.uuid4()
    rows = Order.objects.filter(pk=order_id, state__in=ACTIVE_ORDER_STATES)
    lease_free = rows.filter(lease_until__lte=now)
    if token:
        lease_free = lease_free | rows.filter(lease_token=token)
    claimed = lease_free.update(lease_token=held, lease_until=_lease_until(now))
    return held if claimed == 1 else None


def _hand_over(
    order: Order, held: uuid.UUID, nxt: Next, now: datetime.datetime, inline: bool = False
) -> bool:
    """Moves the order to its next state, if this task still holds it, and sends the next step,
    unless this task runs it itself (`inline`, keeping the lease)."""
    token = held if inline else uuid.uuid4()
    fields = dict(nxt.fields or {})
    fields.update(state=nxt.state, lease_token=token, lease_until=_lease_until(now, nxt.delay), updated=now)
    if nxt.state != order.state:
        fields["step_attempts"] = 0
    moved = Order.objects.filter(pk=order.pk, lease_token=held).update(**fields)
    if moved != 1:
        return False
    # The next step, when this task runs it, reads the order as just written.
    for name, value in fields.items():
        setattr(order, name, value)
    if not inline:
        advance_order_later(order.pk, str(token), nxt.state, nxt.delay)
    return True


# --- running one step --------------------------------------------------------------------------


def run_step(order_id: int, token: str | None, now: datetime.datetime | None = None) -> str:
    """Runs the order's next step if this task may; returns what happened (for logs and tests).

    A step that needs no wait before the next one (the order was placed, the CA says ready, the
    certificate is there) is followed by the next step in the same task, still under the lease:
    every step's outcome is committed before the next starts, so a crash between them loses
    nothing, but a certificate needs four tasks instead of eight.
    """
    now = now or timezone.now()
    held = claim(order_id, token, now)
    if held is None:
        return "skipped: another task holds this order, or it is finished"
    started = time.monotonic()
    trail: list[str] = []
    order = Order.objects.select_related("account").get(pk=order_id)
    if not order.account.account_url:
        # The account was reset (the CA forgot it): register its new key before using it.
        order.account = get_account(order.account.directory_url)
    while True:
        if timezone.now() - order.created > datetime.timedelta(seconds=settings.ACME_ORDER_TIMEOUT_SECONDS):
            fail_order(order, held, f"the CA did not issue within {settings.ACME_ORDER_TIMEOUT_SECONDS} s")
            return "failed: timeout"
        nxt, outcome = _run_one(order, held)
        if nxt is None:
            return "; ".join([*trail, outcome])
        trail.append(f"{order.state} -> {nxt.state}")
        if nxt.state == OrderState.VALID:
            clean_challenge_records(order)
            return "; ".join(trail)
        inline = nxt.delay == 0 and time.monotonic() - started < INLINE_BUDGET_SECONDS
        if not _hand_over(order, held, nxt, timezone.now(), inline=inline):
            return "; ".join([*trail, "lost the lease before handing over"])
        if not inline:
            return "; ".join(trail)


def _run_one(order: Order, held: uuid.UUID) -> tuple[Next | None, str]:
    """One step; maps what the CA or the network did to a retry or a failure (then Next is None)."""
    try:
        return STEPS[order.state](order), ""
    except OrderFailed as failure:
        fail_order(order, held, str(failure), issued_nothing=failure.issued_nothing)
        return None, f"failed: {failure}"
    except messages.Error as problem:
        if problem.code == "accountDoesNotExist":
            reset_account(order.account)
            fail_order(
                order, held, "the CA no longer knows the platform's ACME account; a new one is registered"
            )
            return None, "failed: account unknown to the CA"
        if problem.code in RETRYABLE_PROBLEMS:
            delay = 0 if problem.code == "badNonce" else 2
            return None, _retry(order, held, f"the CA answered {problem.code}", delay)
        if problem.code == "rateLimited":
            return None, rate_limited(order, held, problem)
        fail_order(order, held, describe_problem(problem))
        return None, f"failed: {problem}"
    except (requests.RequestException, errors.ClientError, errors.NonceError) as exc:
        forget_clients()
        return None, _retry(order, held, f"could not reach the CA: {type(exc).__name__}", 2)
    except ChallengeNotPublished as exc:
        return None, _retry(order, held, f"the DNS-01 record could not be published: {exc}", 2)


def _retry_after(problem: messages.Error, now: datetime.datetime) -> datetime.datetime:
    """When the CA said to come back (Retry-After in seconds or as an HTTP date), or in an hour."""
    header = getattr(problem, "retry_after", None)
    if header:
        if header.strip().isdigit():
            return now + datetime.timedelta(seconds=int(header))
        try:
            from email.utils import parsedate_to_datetime

            return max(now, parsedate_to_datetime(header))
        except (TypeError, ValueError):
            pass
    return now + datetime.timedelta(hours=1)


def rate_limited(order: Order, held: uuid.UUID, problem: messages.Error) -> str:
    """A 429 from the CA. At newOrder nothing was issued: the order ends, its tokens go back, and
    the domain waits until the CA's Retry-After without counting a failure. Only "too many
    certificates already issued for <registered domain>" also empties that registered domain's
    bucket until then (the CA counted certificates we did not issue). Later in an order, the
    step is retried after Retry-After."""
    now = timezone.now()
    retry_at = _retry_after(problem, now)
    if order.state != OrderState.PENDING:
        return _retry(
            order, held, f"the CA is rate limiting ({problem.detail})", (retry_at - now).total_seconds()
        )
    text = describe_problem(problem)
    with transaction.atomic():
        ended = Order.objects.filter(pk=order.pk, lease_token=held, state=OrderState.PENDING).update(
            **_ended(OrderState.INVALID, now, f"rate limited by the CA: {text}")
        )
        if ended != 1:
            return "skipped: lost the lease"
        message = f"Let's Encrypt's rate limit: {problem.detail or text}; next attempt at {when(retry_at)}"
        if order.renews_id:
            # The certificate stays served; it is renewed after Retry-After, no failure counted.
            Certificate.objects.filter(pk=order.renews_id).update(
                renew_at=retry_at, renewal_error=f"Renewal: {message}", renewal_claim=None
            )
        else:
            _wait_for_rate_limit(order, message, retry_at, now)
    refund_quota(order.quota_reservation, order.names, order.account_id, "the CA refused the new order (429)")
    synced = []
    if REGISTERED_DOMAIN_LIMIT.search(problem.detail or ""):
        synced = sync_registered_domains(order.names, retry_at)
    logger.info(
        "order %s for %s: rate limited until %s (%s); synced %s",
        order.pk,
        order.names,
        retry_at,
        text,
        synced,
    )
    return f"rate limited until {retry_at.isoformat()}"


def _wait_for_rate_limit(
    order: Order, message: str, retry_at: datetime.datetime, now: datetime.datetime
) -> None:
    """The domain waits in `creating` until the CA's Retry-After, without counting a failure."""
    change_status(
        order.domain_id,
        DomainStatus.CREATING,
        message,
        allowed_from=[DomainStatus.CREATING],
        now=now,
        next_attempt_at=retry_at,
        last_error=message,
    )


def _retry(order: Order, held: uuid.UUID, reason: str, delay: float) -> str:
    attempts = order.step_attempts + 1
    if attempts > settings.ACME_STEP_RETRIES:
        fail_order(order, held, f"{reason}, {attempts - 1} times in a row")
        return f"failed: {reason}"
    delay = delay * (2 ** (attempts - 1)) if delay else 0
    logger.info("order %s: retrying %s in %.1f s (%s)", order.pk, order.state, delay, reason)
    token = uuid.uuid4()
    now = timezone.now()
    moved = Order.objects.filter(pk=order.pk, lease_token=held).update(
        step_attempts=attempts, lease_token=token, lease_until=_lease_until(now, delay), updated=now
    )
    if moved == 1:
        advance_order_later(order.pk, str(token), order.state, delay)
    return f"retry {order.state}: {reason}"


def describe_problem(problem: messages.Error) -> str:
    """The CA's problem document in plain words, with its sub-problems."""
    text = problem.detail or problem.description or str(problem.typ)
    subproblems = getattr(problem, "subproblems", None) or ()
    details = [
        f"{sub.identifier.value if sub.identifier else ''}: {sub.detail}".strip(": ") for sub in subproblems
    ]
    code = problem.code or str(problem.typ)
    return f"{text} [{code}]" + (f" ({'; '.join(details)})" if details else "")


def fail_order(
    order: Order,
    held: uuid.UUID,
    problem: str,
    now: datetime.datetime | None = None,
    issued_nothing: bool | None = None,
) -> bool:
    """Ends the order as invalid and puts the domain in `failing` with backoff (a renewal's domain
    keeps its status and its certificate: renewal_failed); False if not held.

    Its quota tokens are refunded only when the CA certainly issued nothing: before finalize, or
    when the CA said so (`issued_nothing`). Otherwise they stay spent: a certificate may exist."""
    now = now or timezone.now()
    if issued_nothing is None:
        issued_nothing = order.state in BEFORE_FINALIZE
    with transaction.atomic():
        ended = Order.objects.filter(pk=order.pk, lease_token=held, state__in=ACTIVE_ORDER_STATES).update(
            **_ended(OrderState.INVALID, now, problem)
        )
        if ended != 1:
            return False
        if order.renews_id:
            renewal_failed(order, problem, now)
        else:
            _domain_failed(order, problem, now)
    clean_challenge_records(order)
    if issued_nothing:
        refund_quota(
            order.quota_reservation,
            order.names,
            order.account_id,
            f"order {order.pk} failed before any certificate: {problem}",
        )
    logger.info("order %s for %s failed: %s", order.pk, order.names, problem)
    return True


def _domain_failed(order: Order, problem: str, now: datetime.datetime) -> None:
    """An order for a domain without a certificate failed: the domain is `failing` and backs off."""
    failures = Domain.objects.select_for_update().get(pk=order.domain_id).consecutive_failures + 1
    change_status(
        order.domain_id,
        DomainStatus.FAILING,
        f"certificate order failed: {problem}",
        allowed_from=[DomainStatus.CREATING],
        now=now,
        consecutive_failures=failures,
        next_attempt_at=now + retry_delay(failures),
        last_error=f"Let's Encrypt could not issue the certificate: {problem}",
    )


def renewal_failed(order: Order, problem: str, now: datetime.datetime) -> None:
    """A renewal order failed: the certificate it renews stays served, the domain keeps its
    status (and says why in `last_error`), and the next renewal attempt backs off. Call inside
    the transaction that ends the order."""
    cert = Certificate.objects.select_for_update().filter(pk=order.renews_id).first()
    if cert is None:
        return
    failures = cert.renewal_failures + 1
    retry_at = now + retry_delay(failures)
    message = f"Renewal failed: {problem}. Next renewal attempt at {when(retry_at)}."
    Certificate.objects.filter(pk=cert.pk).update(
        renewal_failures=failures, renew_at=retry_at, renewal_error=message, renewal_claim=None
    )
    Domain.objects.filter(pk=order.domain_id).update(last_error=message, updated=now)


# --- the steps ---------------------------------------------------------------------------------


def _poll_delay(order: Order, response: requests.Response | None = None) -> float:
    delay = min(settings.ACME_POLL_INITIAL_SECONDS * (2**order.step_attempts), settings.ACME_POLL_MAX_SECONDS)
    if response is not None and "Retry-After" in response.headers:
        # The library parses both forms (seconds, HTTP date) into a naive local time.
        retry_at = client.ClientV2.retry_after(response, 0)
        delay = max(delay, (retry_at - datetime.datetime.now()).total_seconds())
    return delay


def _poll_again(order: Order, response: requests.Response | None = None) -> Next:
    """The same state again after a growing delay (polls count as attempts, without a limit)."""
    return Next(order.state, _poll_delay(order, response), {"step_attempts": order.step_attempts + 1})


def _fetch_order(order: Order) -> tuple[messages.Order, requests.Response]:
    acme = client_for(order.account)
    response = acme._post_as_get(order.order_url)
    return messages.Order.from_json(response.json()), response


def step_place_order(order: Order) -> Next:
    """newOrder with a CSR of the order's key, then record every authorization and its challenge
    (HTTP-01, or DNS-01 for a wildcard).

    An order whose URL is already recorded (its worker died before handing over) is not placed again.
    """
    if order.order_url:
        return Next(OrderState.AUTHORIZING)
    acme = client_for(order.account)
    key_pem = order.private_key.reveal()
    orderr = acme.new_order(make_csr_pem(key_pem, order.names))
    jwk = acme.net.key
    rows = []
    for authzr in orderr.authorizations:
        body = authzr.body
        # A wildcard's authorization names the base domain, flagged `wildcard` (RFC 8555 7.1.4).
        identifier = ("*." if body.wildcard else "") + body.identifier.value
        if body.status == messages.STATUS_INVALID:
            raise OrderFailed(f"the CA marked the authorization of {identifier} invalid")
        kind = ChallengeKind.DNS_01 if body.wildcard else ChallengeKind.HTTP_01
        wanted = challenges.DNS01 if body.wildcard else challenges.HTTP01
        chosen = next((c for c in body.challenges if isinstance(c.chall, wanted)), None)
        if chosen is None and body.status != messages.STATUS_VALID:
            raise OrderFailed(f"the CA offers no {kind.label} challenge for {identifier}")
        rows.append(
            Challenge(
                order=order,
                identifier=identifier,
                kind=kind,
                authorization_url=authzr.uri,
                authorization_status=body.status.name,
                challenge_url=chosen.uri if chosen else "",
                token=chosen.chall.encode("token") if chosen else "",
                key_authorization=chosen.chall.key_authorization(jwk) if chosen else "",
            )
        )
    # The URL and the challenges commit together: a rerun after a crash finds both or neither.
    with transaction.atomic():
        Challenge.objects.bulk_create(rows)
        Order.objects.filter(pk=order.pk).update(order_url=orderr.uri, finalize_url=orderr.body.finalize)
    order.order_url, order.finalize_url = orderr.uri, orderr.body.finalize
    # Not a column: tells the next step, if this task runs it, that the authorizations are current.
    order.authorizations_fresh = True
    failpoint("after_order_committed")
    return Next(OrderState.AUTHORIZING)


def step_answer_challenges(order: Order) -> Next:
    """Tells the CA to validate each pending authorization (skipping any it already moved on).

    Right after placing the order, in the same task, the authorizations just read are current; a
    later run (after a crash) reads each one again first, so an answered challenge is not answered
    twice.
    """
    acme = client_for(order.account)
    fresh = getattr(order, "authorizations_fresh", False)
    for challenge in Challenge.objects.filter(order=order).exclude(
        authorization_status=messages.STATUS_VALID.name
    ):
        if fresh:
            current = messages.ChallengeBody.from_json(
                {
                    "type": challenge.kind,
                    "url": challenge.challenge_url,
                    "status": "pending",
                    "token": challenge.token,
                }
            )
        else:
            authorization = messages.Authorization.from_json(
                acme._post_as_get(challenge.authorization_url).json()
            )
            if authorization.status != messages.STATUS_PENDING:
                continue
            current = next((c for c in authorization.challenges if c.uri == challenge.challenge_url), None)
            if current is None or current.status != messages.STATUS_PENDING:
                continue
        if challenge.kind == ChallengeKind.DNS_01:
            # The record first (at the target of the customer's CNAME): the CA looks right away.
            try:
                target = dns01.delegation_target(challenge.identifier)
                dns01.provider().publish(target, dns01.txt_value(challenge.key_authorization))
            except dns01.PublishFailed as exc:
                raise ChallengeNotPublished(str(exc)) from None
        acme.answer_challenge(current, current.chall.response(acme.net.key))
    return Next(OrderState.VALIDATING, settings.ACME_POLL_INITIAL_SECONDS)


class ChallengeNotPublished(Exception):
    """The platform's DNS did not take a DNS-01 record: retried like a network error."""


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
            dns01.provider().remove(dns01.delegation_target(identifier))
        except dns01.PublishFailed as exc:
            logger.warning("order %s: the DNS-01 record of %s stays: %s", order.pk, identifier, exc)


def step_poll_validation(order: Order) -> Next:
    """Polls the order until the CA has validated every authorization (or refused one)."""
    failpoint("while_polling")
    body, response = _fetch_order(order)
    if body.status == messages.STATUS_PENDING:
        return _poll_again(order, response)
    if body.status == messages.STATUS_INVALID:
        raise OrderFailed(_authorization_problems(order) or _order_problem(body))
    # Not a column: the finalize step, if this task runs it, starts from this answer.
    order.known_state = (body, response)
    return Next(OrderState.FINALIZING)


def step_finalize(order: Order) -> Next:
    """Sends the CSR once the order is ready; then polls until the certificate URL is there."""
    known = getattr(order, "known_state", None)
    order.known_state = None
    body, response = known or _fetch_order(order)
    if body.status == messages.STATUS_READY:
        acme = client_for(order.account)
        response = acme._post(
            order.finalize_url,
            messages.CertificateRequest(csr=_load_csr(make_csr_pem(order.private_key.reveal(), order.names))),
        )
        body = messages.Order.from_json(response.json())
        failpoint("after_finalize")
    if body.status == messages.STATUS_VALID and body.certificate:
        return Next(OrderState.DOWNLOADING, fields={"certificate_url": body.certificate})
    if body.status in (messages.STATUS_PROCESSING, messages.STATUS_READY):
        return _poll_again(order, response)
    if body.status == messages.STATUS_INVALID:
        # An invalid order never gets a certificate.
        raise OrderFailed(_order_problem(body), issued_nothing=True)
    # Back to pending: the CA wants the authorizations again.
    return Next(OrderState.VALIDATING, settings.ACME_POLL_INITIAL_SECONDS)


def step_download(order: Order) -> Next:
    """Downloads, verifies and stores the certificate, and switches the domain to it, atomically."""
    acme = client_for(order.account)
    fullchain = acme._post_as_get(order.certificate_url).text
    key_pem = order.private_key.reveal()
    try:
        facts = verify_issued_chain(fullchain, key_pem, order.names)
    except ChainRejected as exc:
        raise OrderFailed(f"the issued certificate was rejected: {exc}") from None
    now = timezone.now()
    with transaction.atomic():
        # The order must still be ours and in flight: a deleted domain stores nothing.
        current = (
            Order.objects.select_for_update()
            .filter(pk=order.pk, state=OrderState.DOWNLOADING, lease_token=order.lease_token)
            .first()
        )
        if current is None:
            return Next(OrderState.VALID)
        # ON CONFLICT DO NOTHING: storing the same certificate twice is a no-op, not an error.
        Certificate.objects.bulk_create(
            [
                Certificate(
                    domain_id=order.domain_id,
                    fingerprint_sha256=facts.fingerprint_sha256,
                    source=CertificateSource.LETSENCRYPT,
                    fullchain_pem=facts.fullchain_pem,
                    private_key=seal(key_pem),
                    not_before=facts.not_before,
                    not_after=facts.not_after,
                    sans=facts.sans,
                    issuer=facts.issuer,
                    serial=facts.serial,
                    renew_at=renewal_due(facts.not_before, facts.not_after),
                    created=now,
                )
            ],
            ignore_conflicts=True,
        )
        # The certificates this one replaces are served no more (the newest is) and not renewed.
        Certificate.objects.filter(domain_id=order.domain_id, source=CertificateSource.LETSENCRYPT).exclude(
            fingerprint_sha256=facts.fingerprint_sha256
        ).update(renew_at=None, renewal_claim=None, renewal_reservation=None)
        # The ledger Let's Encrypt's per-registered-domain count is rebuilt from (one row per
        # registered domain the certificate covers).
        Issuance.objects.bulk_create(
            [
                Issuance(
                    registered_domain=domain,
                    names=order.names,
                    renewal=order.is_renewal,
                    fingerprint_sha256=facts.fingerprint_sha256,
                    issued_at=now,
                )
                for domain in registered_domains(order.names)
            ],
            ignore_conflicts=True,
        )
        Order.objects.filter(pk=order.pk).update(**_ended(OrderState.VALID, now))
        transaction.on_commit(lambda: commit_quota(order.quota_reservation, order.names, order.account_id))
        # A valid custom certificate keeps precedence: this one is then the ready fallback.
        custom = has_valid_custom_certificate(order.domain_id, now)
        to = DomainStatus.NOT_USED if custom else DomainStatus.IN_USE
        verb = "renewed" if order.renews_id else "issued"
        reason = f"certificate {verb} by {facts.issuer}, valid until {facts.not_after:%Y-%m-%d}" + (
            "; the custom certificate stays served" if custom else ""
        )
        before = Domain.objects.filter(pk=order.domain_id).values_list("status", flat=True).first()
        change_status(
            order.domain_id, to, reason, now=now, consecutive_failures=0, next_attempt_at=None, last_error=""
        )
        if before == to:
            # A renewal changes no status, but the customer's history shows it.
            DomainEvent.objects.create(
                domain_id=order.domain_id, created=now, from_status=before, to_status=to, reason=reason
            )
    logger.info("order %s: stored certificate %s for %s", order.pk, facts.fingerprint_sha256, order.names)
    return Next(OrderState.VALID)


def _load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(pem)


def _order_problem(body: messages.Order) -> str:
    if body.error is not None:
        return describe_problem(body.error)
    return "the CA marked the order invalid without saying why"


def _authorization_problems(order: Order) -> str:
    acme = client_for(order.account)
    problems = []
    for challenge in Challenge.objects.filter(order=order):
        authorization = messages.Authorization.from_json(
            acme._post_as_get(challenge.authorization_url).json()
        )
        Challenge.objects.filter(pk=challenge.pk).update(authorization_status=authorization.status.name)
        for chall in authorization.challenges:
            if chall.error is not None:
                problems.append(f"{authorization.identifier.value}: {describe_problem(chall.error)}")
    return "; ".join(problems)


STEPS = {
    OrderState.PENDING: step_place_order,
    OrderState.AUTHORIZING: step_answer_challenges,
    OrderState.VALIDATING: step_poll_validation,
    OrderState.FINALIZING: step_finalize,
    OrderState.DOWNLOADING: step_download,
}


# --- the re-drive and cancellation ------------------------------------------------------------


def redrive_expired(now: datetime.datetime | None = None, limit: int = 1000) -> int:
    """Continues every active order whose lease expired (its task was lost or its worker died)."""
    now = now or timezone.now()
    with transaction.atomic():
        expired = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(state__in=ACTIVE_ORDER_STATES, lease_until__lte=now)
            .order_by("lease_until")
            .values_list("pk", "state")[:limit]
        )
        for order_id, state in expired:
            token = uuid.uuid4()
            Order.objects.filter(pk=order_id).update(lease_token=token, lease_until=_lease_until(now))
            advance_order_later(order_id, str(token), state)
    if expired:
        logger.info("re-drove %d order(s) whose lease had expired", len(expired))
    return len(expired)


def cancel_orders_of(domain_id: int, now: datetime.datetime | None = None) -> None:
    """Cancels the domain's order in flight (its tokens stop being served at once) and deactivates
    its pending authorizations at the CA after commit. Call inside the deleting transaction."""
    now = now or timezone.now()
    orders = list(
        Order.objects.select_for_update().filter(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES)
    )
    # A domain waiting for its quota token gives the booked token back.
    waiting = Domain.objects.filter(pk=domain_id).values_list("quota_reservation", "name").first()
    if waiting and waiting[0]:
        transaction.on_commit(
            lambda: refund_quota(waiting[0], [waiting[1]], None, "the domain no longer wants a certificate")
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
        Order.objects.filter(pk=order.pk).update(**_ended(OrderState.CANCELLED, now))
        # The rows may be gone with the domain by then: read the names now.
        published = published_challenges(order.pk) if any(is_wildcard(n) for n in order.names) else []
        if published:
            transaction.on_commit(lambda o=order, p=published: clean_challenge_records(o, p))
        if urls:
            deactivate_authorizations_later(order.account_id, urls)


def deactivate_authorizations(account_id: int, authorization_urls: list[str]) -> int:
    """Deactivates authorizations at the CA (RFC 8555 7.5.2); returns how many it deactivated."""
    acme = client_for(AcmeAccount.objects.get(pk=account_id))
    done = 0
    for url in authorization_urls:
        authzr = messages.AuthorizationResource(uri=url, body=messages.Authorization())
        try:
            acme.deactivate_authorization(authzr)
            done += 1
        except messages.Error as problem:
            logger.info("could not deactivate %s: %s", url, describe_problem(problem))
    return done


def redrive_order_of(domain_id: int, now: datetime.datetime | None = None) -> bool:
    """Continues the domain's order in flight now, whoever held its lease ("retry now")."""
    now = now or timezone.now()
    token = uuid.uuid4()
    with transaction.atomic():
        order = (
            Order.objects.select_for_update()
            .filter(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES)
            .first()
        )
        if order is None:
            return False
        Order.objects.filter(pk=order.pk).update(
            lease_token=token, lease_until=_lease_until(now), step_attempts=0
        )
        advance_order_later(order.pk, str(token), order.state)
    return True
