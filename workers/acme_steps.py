"""The steps of an ACME order, one short idempotent function each (workers/order_run.py runs them).

Each step reads the CA's view of the order first, so repeating a step never repeats its effect (a
second finalize, a second certificate); it returns what to do next (Next) and raises OrderFailed
when the CA refused or failed the order.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass

import requests
from acme import challenges, client, messages
from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from certificates import dns01
from certificates.acme_client import account_order_urls, client_for, place_order, read_order
from certificates.directory import DirectoryUnavailable, directory, forget_directories
from certificates.histograms import TIME_TO_IN_USE, observe
from certificates.issuers import label as issuer_label
from certificates.issuers import record_ca_success
from certificates.keys import make_csr_pem
from certificates.models import (
    AcmeAccount,
    Certificate,
    CertificateSource,
    Challenge,
    ChallengeKind,
    Issuance,
    Order,
    OrderState,
)
from certificates.serving import has_valid_custom_certificate
from certificates.store import store_certificate
from certificates.verify import ChainRejected, verify_issued_chain
from domains.events import certificate_data, record_event
from domains.issuer_choice import clear_avoided_issuers
from domains.locking import lock_domains
from domains.models import Domain, DomainEvent, DomainStatus, EventType
from domains.orders import ended
from domains.profiles import not_offered_message
from domains.quota_policy import (
    Candidate,
    Waiting,
    charge_failed_authorization,
    registered_domains,
    reserve,
    spends_letsencrypt_limits,
)
from domains.quota_policy import commit as commit_quota
from domains.quota_policy import refund as refund_quota
from domains.revocations import owe_revocation_of
from domains.status import change_status
from workers import http01_self_check
from workers.failpoints import failpoint

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another task took the order's lease while this step talked to the CA (its lease expired):
    this step writes nothing more, and the holder goes on from what it finds recorded."""


class OrderFailed(Exception):
    """The CA refused or failed the order; the message is for the customer. `issued_nothing`
    says the CA certainly issued no certificate (None: judge from the order's state)."""

    def __init__(self, message: str, issued_nothing: bool | None = None) -> None:
        super().__init__(message)
        self.issued_nothing = issued_nothing


@dataclass(frozen=True)
class Carried:
    """What a step learned that the next step may start from when the same task runs it at once
    (never stored: a step run later, by another task, reads the CA again)."""

    # The authorizations were just read from the CA (the order was placed in this task).
    authorizations_fresh: bool = False
    # The CA's view of the order just read (polling saw it ready), and its HTTP response.
    order_view: tuple[messages.Order, requests.Response] | None = None


@dataclass(frozen=True)
class Next:
    """What a step decided: the state to move to, how long to wait before running it, the fields
    to write with the move, and what the next step may start from if run at once."""

    state: str
    delay: float = 0.0
    fields: dict | None = None
    carry: Carried = Carried()


class ChallengeNotPublished(Exception):
    """The platform's DNS did not take a DNS-01 record: retried like a network error."""


class RenewalWaits(Exception):
    """A renewal the CA would not let replace its certificate needs a quota token it cannot have
    yet: the order ends and the renewal waits for the token (workers/order_run.py)."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__(waiting.message)
        self.waiting = waiting


# The reservation a renewal takes when the CA refused its `replaces`: one per order, so a step run
# again after a crash spends the same tokens (the quota's spend is idempotent per reservation).
_WITHOUT_REPLACES = uuid.UUID("5d1c8e51-7c1e-4f31-9f43-2b0e0c6a4f10")
# The CA's answers to a `replaces` it will not honour (RFC 9773 section 5; Let's Encrypt answers
# alreadyReplaced, or malformed / unauthorized naming the replaced certificate).
_REPLACES_PROBLEMS = {"malformed", "unauthorized"}


def problem_code(problem: messages.Error) -> str:
    """The ACME error code of `problem`, newer ones included (the library's `code` knows only RFC
    8555's, not alreadyReplaced or invalidProfile); "" for a type outside the ACME namespace."""
    typ = str(problem.typ or "")
    return typ[len(messages.ERROR_PREFIX) :] if typ.startswith(messages.ERROR_PREFIX) else ""


def replaces_refused(problem: messages.Error) -> bool:
    """Whether the CA refused the order for its `replaces` (and would take it without)."""
    code = problem_code(problem)
    if code == "alreadyReplaced":
        return True
    text = f"{problem.detail or ''} {problem.description or ''}".lower()
    return code in _REPLACES_PROBLEMS and "replace" in text


def describe_problem(problem: messages.Error) -> str:
    """The CA's problem document in plain words, with its sub-problems."""
    text = problem.detail or problem.description or str(problem.typ)
    subproblems = getattr(problem, "subproblems", None) or ()
    details = [
        f"{sub.identifier.value if sub.identifier else ''}: {sub.detail}".strip(": ") for sub in subproblems
    ]
    code = problem_code(problem) or str(problem.typ)
    return f"{text} [{code}]" + (f" ({'; '.join(details)})" if details else "")


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


def step_place_order(order: Order, carried: Carried) -> Next:
    """newOrder with a CSR of the order's key, then record every authorization and its challenge
    (HTTP-01, or DNS-01 for a wildcard).

    An order whose URL is already recorded (its worker died before handing over) is not placed again;
    nor is one that may have reached the CA unrecorded (_lost_placement).
    """
    if order.order_url:
        return Next(OrderState.AUTHORIZING)
    acme = client_for(order.account)
    _check_profile_offered(order)
    csr_pem = make_csr_pem(order.private_key.reveal(), order.names)
    orderr = _lost_placement(acme, order)
    try:
        orderr = orderr or place_order(acme, csr_pem, profile=order.profile, replaces=order.replaces)
    except messages.Error as problem:
        if problem_code(problem) == "invalidProfile":
            raise OrderFailed(_profile_refused(order, problem, forget=True), issued_nothing=True) from None
        if not (order.replaces and replaces_refused(problem)):
            raise
        _order_without_replaces(order, problem)
        orderr = place_order(acme, csr_pem, profile=order.profile)
    failpoint("before_order_committed")
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
    # The URL and the challenges commit together: a rerun after a crash finds both or neither. Only
    # under this task's lease and onto an order with no URL yet: a task that took over the expired
    # lease meanwhile has continued (or placed) the order itself, and its record stands.
    with transaction.atomic():
        recorded = Order.objects.filter(pk=order.pk, lease_token=order.lease_token, order_url="").update(
            order_url=orderr.uri, finalize_url=orderr.body.finalize
        )
        if recorded != 1:
            raise LeaseLost(f"order {order.pk} lost its lease before recording {orderr.uri}")
        Challenge.objects.bulk_create(rows)
    failpoint("after_order_committed")
    # The next step, if this task runs it, need not read the authorizations again.
    return Next(
        OrderState.AUTHORIZING,
        fields={"order_url": orderr.uri, "finalize_url": orderr.body.finalize},
        carry=Carried(authorizations_fresh=True),
    )


def _lost_placement(acme: client.ClientV2, order: Order) -> messages.OrderResource | None:
    """The CA-side order an earlier run of this step placed for the order's names but never
    recorded, still pending or ready, when there may be one: the step ran before (a retry after a
    network error, whose answer may have been lost) or the order is older than a lease (a re-drive:
    its worker may have died between the CA's answer and the commit). Placing another would order
    the names twice at a CA that keeps both (Let's Encrypt hands the pending order back to a second
    newOrder; Pebble does not). A first placement reads nothing more."""
    lease = datetime.timedelta(seconds=settings.ACME_ORDER_LEASE_SECONDS)
    if not (order.step_attempts or order.created <= timezone.now() - lease):
        return None
    urls = account_order_urls(acme)
    recorded = set(Order.objects.filter(order_url__in=urls).values_list("order_url", flat=True))
    for url in reversed(urls):
        if url in recorded:
            continue
        found = read_order(acme, url)
        names = sorted(identifier.value for identifier in found.body.identifiers)
        if found.body.status in (messages.STATUS_PENDING, messages.STATUS_READY) and names == sorted(
            order.names
        ):
            logger.warning(
                "order %s continues %s, which the CA took before its worker could record it", order.pk, url
            )
            return found
    return None


def _profile_refused(order: Order, problem: messages.Error | None = None, forget: bool = False) -> str:
    """Why the order's profile cannot be ordered, naming where it came from (the domain's choice
    or ACME_PROFILE) and what the CA offers."""
    if forget:
        # The CA refused a profile the cached directory listed: its offer changed.
        forget_directories()
    try:
        offered = directory(order.account.directory_url).profiles
    except DirectoryUnavailable:
        offered = {}
    chosen = Domain.objects.filter(pk=order.domain_id).values_list("acme_profile", flat=True).first() or ""
    text = not_offered_message(order.profile, chosen, offered)
    return text + (f" (the CA said: {describe_problem(problem)})" if problem is not None else "")


def _check_profile_offered(order: Order) -> None:
    """Fails the order before it reaches the CA when the CA's directory does not offer its
    profile (a CA that cannot be asked is left to answer the order itself)."""
    if not order.profile:
        return
    try:
        offered = directory(order.account.directory_url).profiles
    except DirectoryUnavailable:
        return
    if order.profile not in offered:
        raise OrderFailed(_profile_refused(order), issued_nothing=True)


def _order_without_replaces(order: Order, problem: messages.Error) -> None:
    """The CA would not let this renewal replace its certificate: it is ordered without `replaces`,
    and so spends the quota of an ordinary renewal (RenewalWaits when a token must be waited for)."""
    logger.warning(
        "order %s: the CA refused replaces=%s (%s); ordering again without it, with the quota",
        order.pk,
        order.replaces,
        describe_problem(problem),
    )
    if order.quota_reservation is not None:
        # It spent its quota already (it replaced before the ARI window opened, which Let's
        # Encrypt does not exempt): that token pays for the order without `replaces` too.
        moved = Order.objects.filter(pk=order.pk, lease_token=order.lease_token, order_url="").update(
            replaces=""
        )
        if moved != 1:
            raise LeaseLost(f"order {order.pk} lost its lease while dropping replaces")
        order.replaces = ""
        return
    renewed = (
        Certificate.objects.filter(pk=order.renews_id).values_list("sans", "renewal_reservation").first()
    )
    sans, booked = renewed or ([], None)
    reservation = booked or uuid.uuid5(_WITHOUT_REPLACES, str(order.pk))
    candidate = Candidate(order.domain_id, order.names[0], reservation, sorted(sans) == sorted(order.names))
    outcome = reserve([candidate], order.account_id)[order.domain_id]
    if isinstance(outcome, Waiting):
        raise RenewalWaits(outcome)
    moved = Order.objects.filter(pk=order.pk, lease_token=order.lease_token, order_url="").update(
        replaces="", quota_reservation=outcome.reservation
    )
    if moved != 1:
        refund_quota(outcome.reservation, order.names, order.account_id, "the order's lease was lost")
        raise LeaseLost(f"order {order.pk} lost its lease while dropping replaces")
    order.replaces, order.quota_reservation = "", outcome.reservation


def step_answer_challenges(order: Order, carried: Carried) -> Next:
    """Tells the CA to validate each pending authorization (skipping any it already moved on), an
    HTTP-01 one once the self check finds its challenge served (workers/http01_self_check.py).

    Right after placing the order, in the same task, the authorizations just read are current; a
    later run (after a crash) reads each one again first, so an answered challenge is not answered
    twice.
    """
    acme = client_for(order.account)
    fresh = carried.authorizations_fresh
    now = timezone.now()
    self_check = http01_self_check.applies(order.created, now)
    not_served: list[str] = []
    for challenge in Challenge.objects.filter(order=order).exclude(
        authorization_status=messages.STATUS_VALID.name
    ):
        if challenge.kind == ChallengeKind.HTTP_01 and self_check:
            wrong = http01_self_check.challenge_not_served(
                challenge.identifier, challenge.token, challenge.key_authorization
            )
            if wrong:
                not_served.append(wrong)
                continue
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
            # The record first (at the target of the customer's CNAME, or where the CA looks for
            # the platform's own names): the CA looks right away.
            try:
                target = dns01.txt_owner(challenge.identifier)
                dns01.provider().publish(target, dns01.txt_value(challenge.key_authorization))
            except dns01.PublishFailed as exc:
                raise ChallengeNotPublished(str(exc)) from None
        acme.answer_challenge(current, current.chall.response(acme.net.key))
    if not_served:
        # Not answered yet: answering now would fail the validation (see workers/http01_self_check.py).
        logger.info("order %s waits to answer its challenge: %s", order.pk, "; ".join(not_served))
        return Next(OrderState.AUTHORIZING, http01_self_check.wait_before_next_check(order.created, now))
    return Next(OrderState.VALIDATING, settings.ACME_POLL_INITIAL_SECONDS)


def step_poll_validation(order: Order, carried: Carried) -> Next:
    """Polls the order until the CA has validated every authorization (or refused one)."""
    failpoint("while_polling")
    body, response = _fetch_order(order)
    if body.status == messages.STATUS_PENDING:
        return _poll_again(order, response)
    if body.status == messages.STATUS_INVALID:
        raise OrderFailed(_authorization_problems(order) or _order_problem(body))
    # The finalize step, if this task runs it, starts from this answer.
    return Next(OrderState.FINALIZING, carry=Carried(order_view=(body, response)))


def step_finalize(order: Order, carried: Carried) -> Next:
    """Sends the CSR once the order is ready; then polls until the certificate URL is there."""
    body, response = carried.order_view or _fetch_order(order)
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


def step_download(order: Order, carried: Carried) -> Next:
    """Downloads, verifies and stores the certificate, and switches the domain to it, atomically."""
    acme = client_for(order.account)
    fullchain = acme._post_as_get(order.certificate_url).text
    key_pem = order.private_key.reveal()
    try:
        facts = verify_issued_chain(
            fullchain, key_pem, order.names, directory_url=order.account.directory_url
        )
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
        # Issued, or renewed: the domain held a Let's Encrypt certificate before this one.
        renewed = bool(order.renews_id) or (
            Certificate.objects.filter(domain_id=order.domain_id, source=CertificateSource.LETSENCRYPT)
            .exclude(fingerprint_sha256=facts.fingerprint_sha256)
            .exists()
        )
        # None when the domain already holds this leaf: storing it twice is a no-op, not an error.
        store_certificate(
            order.domain_id,
            CertificateSource.LETSENCRYPT,
            facts,
            key_pem,
            now,
            account_id=order.account_id,
            profile=order.profile,
        )
        # The certificates this one replaces are not renewed (serving takes the unrevoked one that
        # ends last, which is this one unless it was ordered under a shorter profile).
        Certificate.objects.filter(domain_id=order.domain_id, source=CertificateSource.LETSENCRYPT).exclude(
            fingerprint_sha256=facts.fingerprint_sha256
        ).update(renew_at=None, renewal_claim=None, renewal_reservation=None, ari_next_check=None)
        # The ledger Let's Encrypt's per-registered-domain count is rebuilt from (one row per
        # registered domain the certificate covers); another issuer's certificates do not count there.
        letsencrypt_limits = spends_letsencrypt_limits(order.account.directory_url)
        Issuance.objects.bulk_create(
            [
                Issuance(
                    registered_domain=domain,
                    names=order.names,
                    renewal=order.is_renewal,
                    fingerprint_sha256=facts.fingerprint_sha256,
                    issued_at=now,
                    issuer=issuer_label(order.account.directory_url),
                    spends_letsencrypt_limits=letsencrypt_limits,
                )
                for domain in registered_domains(order.names)
            ],
            ignore_conflicts=True,
        )
        # The issuer delivered: its breaker closes, and the domain's next order (its renewal)
        # tries the issuers in order again.
        record_ca_success(order.account.directory_url)
        clear_avoided_issuers(order.domain_id)
        Order.objects.filter(pk=order.pk).update(**ended(OrderState.VALID, now))
        transaction.on_commit(lambda: commit_quota(order.quota_reservation, order.names, order.account_id))
        if order.revoke_replaced and order.renews_id:
            # Revoke and replace: the old certificate is revoked only after this commit, which
            # makes the new one the served one, so the name is never left with a revoked one.
            # Owed in this transaction: if the message is lost, the re-drive sends it again.
            transaction.on_commit(lambda: failpoint("before_revocation_sent"))
            owe_revocation_of(order.renews_id, order.revoke_replaced, now)
        # A valid custom certificate keeps precedence: this one is then the ready fallback.
        custom = has_valid_custom_certificate(order.domain_id, now)
        to = DomainStatus.NOT_USED if custom else DomainStatus.IN_USE
        verb = "renewed" if renewed else "issued"
        reason = f"certificate {verb} by {facts.issuer}, valid until {facts.not_after:%Y-%m-%d}" + (
            "; the custom certificate stays served" if custom else ""
        )
        locked = lock_domains([order.domain_id]).values_list("status", "created").first()
        before, added = locked or (None, None)
        if not renewed and to == DomainStatus.IN_USE and added is not None:
            # The domain's first certificate from a CA is served once this commits.
            waited = (now - added).total_seconds()
            transaction.on_commit(lambda: observe(TIME_TO_IN_USE, waited))
        record_event(
            EventType.CERTIFICATE_RENEWED if renewed else EventType.CERTIFICATE_ISSUED,
            order.domain_id,
            now,
            reason=reason,
            from_status=before,
            to_status=to,
            data={
                **certificate_data(
                    facts.fingerprint_sha256, facts.serial, facts.issuer, facts.not_before, facts.not_after
                ),
                "profile": order.profile,
                "served": not custom,
            },
        )
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
    """Why the CA refused the order's authorizations; each one found invalid spends a token of
    its identifier's failed-authorization bucket, once per authorization (a rerun of this step
    reads it again: the charge is keyed by its URL)."""
    acme = client_for(order.account)
    problems = []
    for challenge in Challenge.objects.filter(order=order):
        authorization = messages.Authorization.from_json(
            acme._post_as_get(challenge.authorization_url).json()
        )
        Challenge.objects.filter(pk=challenge.pk).update(authorization_status=authorization.status.name)
        if authorization.status == messages.STATUS_INVALID:
            charge_failed_authorization(
                order.account_id, authorization.identifier.value, challenge.authorization_url
            )
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
