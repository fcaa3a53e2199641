"""ACME issuance as a persisted state machine: the lease of an order, the loop that runs its steps
(workers/acme_steps.py), and what a failure, a retry or a rate limit does to the order and its domain.

An order row says which step runs next (its state). A step claims the row's lease, talks to the
CA without holding a database transaction, then records what it learned and hands the lease to the
next step in one transaction, and the next task is sent after that commit. A task delivered twice
finds the lease taken and does nothing; a task lost with the broker or a worker killed mid-step
leaves a lease that expires, and the periodic re-drive continues from the recorded state.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
import uuid
from email.utils import parsedate_to_datetime

import requests
from acme import errors, messages
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from certificates.acme_client import forget_clients, get_account, reset_account
from certificates.issuers import IssuerMisconfigured, record_ca_failure
from certificates.issuers import label as issuer_label
from certificates.models import ACTIVE_ORDER_STATES, Order, OrderState
from domains.backoff import retry_delay
from domains.claims import claim_check_now, renew_now
from domains.enqueue import advance_order_later
from domains.issuer_choice import avoid_issuer, several_issuers
from domains.locking import lock_domains
from domains.models import Domain, DomainStatus, WaitingOn
from domains.orders import BEFORE_FINALIZE, clean_challenge_records, ended, lease_until
from domains.pauses import pause_domains
from domains.quota_policy import refund as refund_quota
from domains.quota_policy import (
    spends_letsencrypt_limits,
    sync_failed_authorizations,
    sync_registered_domains,
    when,
)
from domains.revocations import replacement_failed
from domains.status import change_status
from workers.acme_steps import (
    STEPS,
    Carried,
    ChallengeNotPublished,
    LeaseLost,
    Next,
    OrderFailed,
    RenewalWaits,
    describe_problem,
)
from workers.db_sessions import DatabaseLost, database_unreachable
from workers.preflight import TRANSIENT_RETRY
from workers.renewals import record_renewal_failure, renewal_waits

logger = logging.getLogger(__name__)

# ACME problem types worth retrying as they are: the request was not processed.
RETRYABLE_PROBLEMS = {"badNonce", "serverInternal"}
# How long one task may keep running steps that need no wait before it hands over to a new task.
INLINE_BUDGET_SECONDS = 20
# Let's Encrypt's 429 for its per-registered-domain limit: "too many certificates (50) already
# issued for "example.com" in the last 168h0m0s, retry after ...". Its exact-set limit says "for
# this exact set of identifiers" instead, and new-order or failed-authorization limits say neither.
REGISTERED_DOMAIN_LIMIT = re.compile(
    r"too many certificates\b.*\balready issued for(?!\s*this exact set)", re.I
)
# Its 429 for the failed-authorization limit: 'too many failed authorizations (5) for "NAME" in
# the last 1h0m0s, retry after ...' (Boulder's ratelimits/limiter.go).
FAILED_AUTHZ_LIMIT = re.compile(r'too many failed authorizations\b.*?\bfor "(?P<name>[^"]+)"', re.I)
# Its refusal of a paused identifier (Boulder's wfe2, a 429 rateLimited at newOrder): "Your account
# is temporarily prevented from requesting certificates for NAME[, NAME...] and possibly others.
# Please visit: URL". Matched whatever the problem type, so a change of type cannot turn it into
# a blind retry.
PAUSED = re.compile(
    r"temporarily prevented from requesting certificates for (?P<names>.+?) and possibly others\b"
    r".*?(?P<url>https?://\S+)",
    re.I | re.S,
)


def claim(order_id: int, token: str | None, now: datetime.datetime) -> uuid.UUID | None:
    """Takes the order's lease for one step: with the token the previous step handed over, or
    because the lease expired. Returns the new token, or None when another task holds it."""
    held = uuid.uuid4()
    rows = Order.objects.filter(pk=order_id, state__in=ACTIVE_ORDER_STATES)
    lease_free = rows.filter(lease_until__lte=now)
    if token:
        lease_free = lease_free | rows.filter(lease_token=token)
    claimed = lease_free.update(lease_token=held, lease_until=lease_until(now))
    return held if claimed == 1 else None


def _hand_over(
    order: Order, held: uuid.UUID, nxt: Next, now: datetime.datetime, inline: bool = False
) -> bool:
    """Moves the order to its next state, if this task still holds it, and sends the next step,
    unless this task runs it itself (`inline`, keeping the lease)."""
    token = held if inline else uuid.uuid4()
    fields = dict(nxt.fields or {})
    fields.update(state=nxt.state, lease_token=token, lease_until=lease_until(now, nxt.delay), updated=now)
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
    try:
        return _run_steps(order_id, held)
    except Exception as exc:
        if database_unreachable(exc):
            raise DatabaseLost(str(held)) from exc
        raise


def _run_steps(order_id: int, held: uuid.UUID) -> str:
    """The steps of run_step, under the lease `held`."""
    started = time.monotonic()
    trail: list[str] = []
    order = Order.objects.select_related("account").get(pk=order_id)
    carried = Carried()
    if not order.account.account_url:
        # The account was reset (the CA forgot it): register its new key before using it.
        try:
            order.account = get_account(order.account.directory_url)
        except IssuerMisconfigured as exc:
            fail_order(order, held, str(exc))
            return f"failed: {exc}"
    while True:
        if timezone.now() - order.created > datetime.timedelta(seconds=settings.ACME_ORDER_TIMEOUT_SECONDS):
            fail_order(order, held, f"the CA did not issue within {settings.ACME_ORDER_TIMEOUT_SECONDS} s")
            return "failed: timeout"
        nxt, outcome = _run_one(order, held, carried)
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
        carried = nxt.carry


def _run_one(order: Order, held: uuid.UUID, carried: Carried) -> tuple[Next | None, str]:
    """One step; maps what the CA or the network did to a retry or a failure (then Next is None)."""
    try:
        return STEPS[order.state](order, carried), ""
    except OrderFailed as failure:
        fail_order(order, held, str(failure), issued_nothing=failure.issued_nothing)
        return None, f"failed: {failure}"
    except RenewalWaits as wait:
        return None, _renewal_waits(order, held, wait)
    except LeaseLost as lost:
        return None, f"skipped: {lost}"
    except messages.Error as problem:
        if problem.code == "accountDoesNotExist":
            reset_account(order.account)
            return None, start_over(
                order, held, "the CA no longer knows the platform's ACME account; a new one is registered"
            )
        pause = PAUSED.search(problem.detail or "")
        if pause and order.state == OrderState.PENDING:
            return None, paused(order, held, pause["names"], pause["url"].rstrip(".,;)\"'"))
        if problem.code == "badNonce":
            return None, _retry(order, held, "the CA answered badNonce", 0, ca_side=True)
        if problem.code in RETRYABLE_PROBLEMS:
            return None, _ca_failed(order, held, f"the CA answered {problem.code}")
        if problem.code == "rateLimited":
            return None, rate_limited(order, held, problem)
        fail_order(order, held, describe_problem(problem))
        return None, f"failed: {problem}"
    except (requests.RequestException, errors.ClientError, errors.NonceError) as exc:
        forget_clients()
        if _not_found(exc, order):
            return None, start_over(order, held, "the CA no longer knows this order (HTTP 404)")
        return None, _ca_failed(order, held, f"could not reach the CA: {type(exc).__name__}")
    except ChallengeNotPublished as exc:
        return None, _retry(order, held, f"the DNS-01 record could not be published: {exc}", 2)
    except Exception as exc:
        if database_unreachable(exc):
            # Not this order's fault: run_step hands its lease to a retry of the task.
            raise
        # A fault of Certwright's own with this order (a bug, a row it cannot read): logged, and
        # retried with the step's backoff until ACME_STEP_RETRIES fails the order, so the order
        # never wedges in a loop of lease expiries and the other orders are not held up.
        logger.exception("order %s: step %s raised", order.pk, order.state)
        return None, _retry(order, held, f"internal error in step {order.state} ({type(exc).__name__})", 2)


def _ca_failed(order: Order, held: uuid.UUID, reason: str) -> str:
    """A failure on the CA's side (down, unreachable, erroring): counted against its issuer's
    breaker. An order the CA has not taken yet (newOrder) goes to the next issuer at once, when
    there is one; one already under way retries its step, and fails over once retries run out."""
    record_ca_failure(order.account.directory_url, reason)
    if order.state == OrderState.PENDING and several_issuers():
        return fail_over(order, held, reason)
    return _retry(order, held, reason, 2, ca_side=True)


def fail_over(order: Order, held: uuid.UUID, reason: str) -> str:
    """The CA failed the order on its side: the order ends (no failure counted), the domain avoids
    its issuer for a while, and its next order (its renewal) is checked at once, so that it goes to
    the next issuer its CAA allows (workers/preflight.py). Its quota tokens go back when it had not
    reached finalize, as in fail_order."""
    now = timezone.now()
    issuer = issuer_label(order.account.directory_url)
    text = f"{issuer} failed on its side ({reason}); the next order goes to the next certificate authority"
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state__in=ACTIVE_ORDER_STATES).update(
            **ended(OrderState.INVALID, now, text)
        )
        if stopped != 1:
            return "skipped: lost the lease"
        # An issuer the domain already avoided failed it again: every issuer it may use failed it
        # lately, so it is paced to once a minute instead of ordering again at once.
        again = Domain.objects.filter(
            pk=order.domain_id, avoid_issuers__contains=[issuer], avoid_issuers_until__gt=now
        ).exists()
        avoid_issuer(order.domain_id, issuer, now)
        next_at = now + TRANSIENT_RETRY if again else now
        if order.renews_id:
            record_renewal_failure(
                order.renews_id, order.domain_id, text, now, retry_at=next_at, counted=False
            )
            replacement_failed(order, text, now)
            if not again:
                renew_now(order.domain_id, now)
        else:
            _wait_for_rate_limit(order, text, next_at, now)
            if not again:
                claim_check_now(order.domain_id, now=now)
    clean_challenge_records(order)
    if order.state in BEFORE_FINALIZE:
        refund_quota(order.quota_reservation, order.names, order.account_id, f"order {order.pk}: {reason}")
    logger.info("order %s for %s failed over from %s: %s", order.pk, order.names, issuer, reason)
    return f"failed over: {reason}"


def _retry_after(problem: messages.Error, now: datetime.datetime) -> datetime.datetime:
    """When the CA said to come back (Retry-After in seconds or as an HTTP date), or in an hour."""
    header = getattr(problem, "retry_after", None)
    if header:
        if header.strip().isdigit():
            return now + datetime.timedelta(seconds=int(header))
        try:
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
            order,
            held,
            f"the CA is rate limiting ({problem.detail})",
            (retry_at - now).total_seconds(),
            ca_side=True,
        )
    text = describe_problem(problem)
    far = (retry_at - now).total_seconds() > settings.ISSUER_FAILOVER_RETRY_AFTER_SECONDS
    if far and several_issuers():
        # The buckets learn what the CA said (below, as always); the domain does not wait for it.
        _sync_rate_limit(order, problem, retry_at)
        return fail_over(order, held, f"rate limited until {when(retry_at)}: {text}")
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state=OrderState.PENDING).update(
            **ended(OrderState.INVALID, now, f"rate limited by the CA: {text}")
        )
        if stopped != 1:
            return "skipped: lost the lease"
        limit = f"Let's Encrypt's rate limit: {problem.detail or text}"
        if order.renews_id:
            # The certificate stays served; it is renewed after Retry-After, no failure counted.
            record_renewal_failure(
                order.renews_id, order.domain_id, limit, now, retry_at=retry_at, counted=False
            )
            replacement_failed(order, limit, now)
        else:
            _wait_for_rate_limit(order, f"{limit}; next attempt at {when(retry_at)}", retry_at, now)
    refund_quota(order.quota_reservation, order.names, order.account_id, "the CA refused the new order (429)")
    synced = _sync_rate_limit(order, problem, retry_at)
    logger.info(
        "order %s for %s: rate limited until %s (%s); synced %s",
        order.pk,
        order.names,
        retry_at,
        text,
        synced,
    )
    return f"rate limited until {retry_at.isoformat()}"


def _sync_rate_limit(order: Order, problem: messages.Error, retry_at: datetime.datetime) -> list[str]:
    """What a 429 tells the quota buckets of Let's Encrypt's limits (only an issuer that spends
    them): "too many certificates for <registered domain>" empties that domain's bucket until
    `retry_at`, too many failed authorizations the name's. Returns the subjects synced."""
    if not spends_letsencrypt_limits(order.account.directory_url):
        return []
    synced = []
    if REGISTERED_DOMAIN_LIMIT.search(problem.detail or ""):
        synced = sync_registered_domains(order.names, retry_at)
    failed = FAILED_AUTHZ_LIMIT.search(problem.detail or "")
    if failed and sync_failed_authorizations(failed["name"], order.account_id, retry_at):
        synced = [failed["name"]]
    return synced


def _renewal_waits(order: Order, held: uuid.UUID, wait: RenewalWaits) -> str:
    """A renewal that lost its `replaces` must wait for a quota token: the order ends (nothing was
    placed at the CA) and the certificate, still served, is renewed when its token arrives."""
    now = timezone.now()
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state=OrderState.PENDING).update(
            **ended(OrderState.INVALID, now, f"waiting for a quota token: {wait.waiting.message}")
        )
        if stopped != 1:
            return "skipped: lost the lease"
        renewal_waits(order.renews_id, wait.waiting, now)
    return f"renewal waits for its quota token until {wait.waiting.until.isoformat()}"


def paused(order: Order, held: uuid.UUID, names: str, unpause_url: str) -> str:
    """The CA refused the new order because it paused the name for the platform's account: the
    order ends, its tokens go back (the CA counted nothing), and the domain, with any other domain
    of a name the CA listed, waits in `action_required` for an operator (domains/pauses.py)."""
    now = timezone.now()
    listed = {name.strip().lower() for name in names.split(",") if name.strip()}
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state=OrderState.PENDING).update(
            **ended(OrderState.INVALID, now, f"the CA paused {', '.join(sorted(listed))} for this account")
        )
        if stopped != 1:
            return "skipped: lost the lease"
        others = Domain.objects.filter(name__in=listed).values_list("pk", flat=True)
        newly = pause_domains(sorted({order.domain_id, *others}), unpause_url, now)
        replacement_failed(order, f"the CA paused {', '.join(sorted(listed))} for this account", now)
    refund_quota(order.quota_reservation, order.names, order.account_id, "the CA paused the name")
    logger.warning(
        "order %s: Let's Encrypt paused %s for the platform's account (%d domain(s) newly paused); "
        "an operator must visit the unpause URL shown in the admin, then mark them unpaused",
        order.pk,
        ", ".join(sorted(listed)),
        len(newly),
    )
    return "paused by the CA"


def _not_found(exc: Exception, order: Order) -> bool:
    """A 404 without a problem document (the library's ClientError): the CA has no such order,
    authorization or certificate, as when it restarted (Pebble) or the order expired. Not the
    directory's own 404 (a wrong ACME_DIRECTORY_URL), which no new order would cure."""
    response = exc.args[0] if isinstance(exc, errors.ClientError) and exc.args else None
    return (
        isinstance(response, requests.Response)
        and response.status_code == 404
        and response.url != order.account.directory_url
    )


def start_over(order: Order, held: uuid.UUID, reason: str) -> str:
    """The CA forgot the order or the account that placed it: nothing more can come of the order.
    It ends, and its domain (or renewal) is attempted again at the next sweep, with no failure
    counted: the customer did nothing wrong, and a backoff would only delay the new order.
    Its quota tokens go back when it had not reached finalize, as in fail_order."""
    now = timezone.now()
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state__in=ACTIVE_ORDER_STATES).update(
            **ended(OrderState.INVALID, now, reason)
        )
        if stopped != 1:
            return "skipped: lost the lease"
        if order.renews_id:
            record_renewal_failure(order.renews_id, order.domain_id, reason, now, retry_at=now, counted=False)
            replacement_failed(order, reason, now)
        else:
            _wait_for_rate_limit(order, f"{reason}; next attempt at {when(now)}", now, now)
    clean_challenge_records(order)
    if order.state in BEFORE_FINALIZE:
        refund_quota(order.quota_reservation, order.names, order.account_id, f"order {order.pk}: {reason}")
    logger.info("order %s for %s started over: %s", order.pk, order.names, reason)
    return f"started over: {reason}"


def _wait_for_rate_limit(
    order: Order, message: str, retry_at: datetime.datetime, now: datetime.datetime
) -> None:
    """The domain waits in `creating` until `retry_at` (the CA's Retry-After, or now when the order
    starts over), without counting a failure."""
    change_status(
        order.domain_id,
        DomainStatus.CREATING,
        message,
        allowed_from=[DomainStatus.CREATING],
        now=now,
        next_attempt_at=retry_at,
        last_error=message,
        waiting_on=WaitingOn.QUOTA,
    )


def _retry(order: Order, held: uuid.UUID, reason: str, delay: float, ca_side: bool = False) -> str:
    """The step again after `delay` doubled per attempt; after ACME_STEP_RETRIES the order fails.
    A `ca_side` reason (the CA unreachable, failing or rate limiting) fails it without counting a
    failure, and its domain is tried again a minute later: a CA outage must not push every domain
    in flight deep into the backoff, to wait hours after the CA is back."""
    attempts = order.step_attempts + 1
    if attempts > settings.ACME_STEP_RETRIES:
        if ca_side and several_issuers():
            return fail_over(order, held, f"{reason}, {attempts - 1} times in a row")
        fail_order(order, held, f"{reason}, {attempts - 1} times in a row", counted=not ca_side)
        return f"failed: {reason}"
    delay = delay * (2 ** (attempts - 1)) if delay else 0
    logger.info("order %s: retrying %s in %.1f s (%s)", order.pk, order.state, delay, reason)
    token = uuid.uuid4()
    now = timezone.now()
    moved = Order.objects.filter(pk=order.pk, lease_token=held).update(
        step_attempts=attempts, lease_token=token, lease_until=lease_until(now, delay), updated=now
    )
    if moved == 1:
        if delay and order.renews_id is None:
            _say_why_creating_waits(order, reason, attempts, now + datetime.timedelta(seconds=delay), ca_side)
        advance_order_later(order.pk, str(token), order.state, delay)
    return f"retry {order.state}: {reason}"


def _say_why_creating_waits(
    order: Order, reason: str, attempts: int, again_at: datetime.datetime, ca_side: bool
) -> None:
    """A first certificate's domain is in Creating while its order's step is retried (about 8
    minutes of retries while a CA is down): it says why, and when the step is tried again, rather
    than nothing. What happens next writes over it (In use clears it; a failure or a start over
    states its own). A renewal's domain keeps its status and says nothing here (its certificate
    records the renewal's failures); an immediate retry (a bad nonce) is not worth a write."""
    text = (
        f"{reason}; the step is tried again at {when(again_at)} "
        f"(attempt {attempts} of {settings.ACME_STEP_RETRIES})"
    )
    Domain.objects.filter(pk=order.domain_id, status=DomainStatus.CREATING).update(
        last_error=text, **({"waiting_on": WaitingOn.CA} if ca_side else {})
    )


def fail_order(
    order: Order,
    held: uuid.UUID,
    problem: str,
    now: datetime.datetime | None = None,
    issued_nothing: bool | None = None,
    counted: bool = True,
) -> bool:
    """Ends the order as invalid and puts the domain in `failing` with backoff (a renewal's domain
    keeps its status and its certificate: record_renewal_failure); False if not held. Not
    `counted` (the CA's own trouble): no failure is counted, the next attempt is in TRANSIENT_RETRY.

    Its quota tokens are refunded only when the CA certainly issued nothing: before finalize, or
    when the CA said so (`issued_nothing`). Otherwise they stay spent: a certificate may exist."""
    now = now or timezone.now()
    if issued_nothing is None:
        issued_nothing = order.state in BEFORE_FINALIZE
    with transaction.atomic():
        stopped = Order.objects.filter(pk=order.pk, lease_token=held, state__in=ACTIVE_ORDER_STATES).update(
            **ended(OrderState.INVALID, now, problem)
        )
        if stopped != 1:
            return False
        if order.renews_id:
            retry_at = None if counted else now + TRANSIENT_RETRY
            record_renewal_failure(
                order.renews_id, order.domain_id, problem, now, retry_at=retry_at, counted=counted
            )
            replacement_failed(order, problem, now)
        else:
            _domain_failed(order, problem, now, counted)
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


def _domain_failed(order: Order, problem: str, now: datetime.datetime, counted: bool = True) -> None:
    """An order for a domain without a certificate failed: the domain is `failing` and backs off,
    or, not `counted` (the CA's own trouble), is tried again after TRANSIENT_RETRY."""
    failures = lock_domains([order.domain_id]).get().consecutive_failures + (1 if counted else 0)
    change_status(
        order.domain_id,
        DomainStatus.FAILING,
        f"certificate order failed: {problem}",
        allowed_from=[DomainStatus.CREATING],
        now=now,
        consecutive_failures=failures,
        next_attempt_at=now + (retry_delay(failures) if counted else TRANSIENT_RETRY),
        last_error=f"Let's Encrypt could not issue the certificate: {problem}",
        waiting_on=WaitingOn.CA,
    )


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
            Order.objects.filter(pk=order_id).update(lease_token=token, lease_until=lease_until(now))
            advance_order_later(order_id, str(token), state)
    if expired:
        logger.info("re-drove %d order(s) whose lease had expired", len(expired))
    return len(expired)
