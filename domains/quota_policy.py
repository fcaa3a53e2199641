"""Which of Let's Encrypt's limits an order spends, and what issuance does with the answers.

A new certificate spends one token from each registered domain it covers, from its exact set of
names, and from the ACME account's new-order bucket; a renewal (the same names as a certificate the
domain already has) only from the exact set, as at Let's Encrypt. Tokens are spent before the order
is placed, committed when the certificate is stored, and refunded only when the CA certainly issued
nothing. A registered-domain bucket Redis lost is rebuilt from the `Issuance` ledger.

Every order, a renewal too, also needs room for one more failed authorization of each of its names
at its account (5 an hour at Let's Encrypt): a check-only bucket, spent only when the CA marks an
authorization invalid (`charge_failed_authorization`).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from certificates.issuers import by_directory
from certificates.models import (
    ACTIVE_ORDER_STATES,
    AcmeAccount,
    Issuance,
    Order,
    QuotaKind,
    QuotaOverride,
)
from config.issuers import IssuerSetting
from domains.names import registered_domain
from domains.quota import Bucket, Level, Quota, QuotaUnavailable, replay

logger = logging.getLogger(__name__)

REGISTERED_DOMAIN_PREFIX = "quota:rd:"
EXACT_SET_PREFIX = "quota:set:"
ACCOUNT_PREFIX = "quota:account:"
FAILED_AUTHZ_PREFIX = "quota:fa:"
FAILED_AUTHZ_ONCE_PREFIX = "quota:fa-once:"
# An issuer's own limit (ACME_ISSUERS' `limits`: {"orders": N, "period_seconds": S}), all domains.
ISSUER_PREFIX = "quota:issuer:"
WEEK = 7 * 24 * 3600

_quota: Quota | None = None


def get_quota() -> Quota:
    """This process' quota client (redis-py reconnects after a fork by itself)."""
    global _quota
    if _quota is None:
        client = redis.Redis.from_url(
            settings.QUOTA_REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        _quota = Quota(client, rebuild=rebuild_from_postgres)
    return _quota


# --- the buckets ---------------------------------------------------------------------------------


def registered_domains(names: list[str]) -> list[str]:
    """The registered domains these names are under, as Let's Encrypt counts them."""
    return sorted({registered_domain(name) or name for name in names})


Overrides = dict[tuple[str, str], tuple[int, int]]


def exact_set_subject(names: list[str]) -> str:
    return ",".join(sorted(set(names)))


def load_overrides(names_by_order: list[list[str]], account_ids: list[int]) -> Overrides:
    """The database overrides that apply to these orders, in one query."""
    subjects = Q(kind=QuotaKind.ACCOUNT, subject__in=[str(a) for a in account_ids])
    domains = registered_domains([name for names in names_by_order for name in names])
    subjects |= Q(kind=QuotaKind.REGISTERED_DOMAIN, subject__in=domains)
    subjects |= Q(kind=QuotaKind.EXACT_SET, subject__in={exact_set_subject(n) for n in names_by_order})
    found: Overrides = {}
    for kind, subject, capacity, period in QuotaOverride.objects.filter(subjects).values_list(
        "kind", "subject", "capacity", "period_seconds"
    ):
        if kind == QuotaKind.EXACT_SET:
            subject = exact_set_subject(subject.split(","))
        found[(kind, subject)] = (capacity, period)
    return found


def _bucket(kind: str, key: str, subject: str, overrides: Overrides, durable: bool = False) -> Bucket:
    defaults = {
        QuotaKind.REGISTERED_DOMAIN: (
            settings.QUOTA_REGISTERED_DOMAIN_LIMIT,
            settings.QUOTA_REGISTERED_DOMAIN_PERIOD_SECONDS,
        ),
        QuotaKind.EXACT_SET: (settings.QUOTA_EXACT_SET_LIMIT, settings.QUOTA_EXACT_SET_PERIOD_SECONDS),
        QuotaKind.ACCOUNT: (settings.QUOTA_ACCOUNT_LIMIT, settings.QUOTA_ACCOUNT_PERIOD_SECONDS),
    }
    capacity, period = overrides.get((kind, subject), defaults[kind])
    # Rounded up: a bucket is never more generous than its limit.
    interval = -(-period * 1_000_000 // capacity)
    return Bucket(key, capacity, interval, durable=durable, subject=subject)


def registered_domain_bucket(domain: str, overrides: Overrides | None = None) -> Bucket:
    overrides = overrides if overrides is not None else load_overrides([[domain]], [])
    return _bucket(
        QuotaKind.REGISTERED_DOMAIN, REGISTERED_DOMAIN_PREFIX + domain, domain, overrides, durable=True
    )


def authorization_identifier(name: str) -> str:
    """The identifier of a name's authorization at the CA: a wildcard's is its base domain."""
    return name[2:] if name.startswith("*.") else name


def failed_authz_bucket(identifier: str, account_id: int) -> Bucket:
    """Failed authorizations of one identifier at one account: check only (see quota.py).

    Not durable, and with no override (Let's Encrypt offers none for it): a Redis that lost it
    thinks it full, and the worst that does is one order the CA refuses with its own 429 ("too many
    failed authorizations ... retry after"), which order_run turns into a wait and a sync of this
    bucket. The bucket covers an hour: a rebuild would cost more than that one refused order."""
    capacity, period = settings.QUOTA_FAILED_AUTHZ_LIMIT, settings.QUOTA_FAILED_AUTHZ_PERIOD_SECONDS
    identifier = authorization_identifier(identifier)
    return Bucket(
        f"{FAILED_AUTHZ_PREFIX}{account_id}:{identifier}",
        capacity,
        -(-period * 1_000_000 // capacity),
        subject=identifier,
        check_only=True,
    )


def buckets_for(names: list[str], account_id: int, *, renewal: bool, overrides: Overrides) -> list[Bucket]:
    """The buckets one order spends from (the failed-authorization ones only checked)."""
    subject = exact_set_subject(names)
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    exact = _bucket(QuotaKind.EXACT_SET, EXACT_SET_PREFIX + digest, subject, overrides)
    # A renewal of the same names is checked against it too, as at Let's Encrypt; only an ARI
    # renewal (`replaces`) is exempt from checking every limit, this one included. Its failed
    # validations still count at the CA all the same (Boulder charges every invalid authorization).
    failed = [failed_authz_bucket(name, account_id) for name in sorted(set(names))]
    if renewal:
        return [exact, *failed]
    domains = registered_domains(names)
    return [
        *(registered_domain_bucket(domain, overrides) for domain in domains),
        exact,
        _bucket(QuotaKind.ACCOUNT, f"{ACCOUNT_PREFIX}{account_id}", str(account_id), overrides),
        *failed,
    ]


def rebuild_from_postgres(bucket: Bucket) -> int:
    """A lost registered-domain bucket's TAT, from the certificates issued for that registered domain
    in its last period and the orders in flight that spent a token: never assumed full."""
    now = timezone.now()
    since = now - datetime.timedelta(microseconds=bucket.period_us)
    issued = Issuance.objects.filter(
        registered_domain=bucket.subject, renewal=False, issued_at__gt=since, spends_letsencrypt_limits=True
    ).values_list("issued_at", flat=True)
    in_flight = Order.objects.filter(
        domain__registered_domain=bucket.subject,
        state__in=ACTIVE_ORDER_STATES,
        is_renewal=False,
        quota_reservation__isnull=False,
    ).values_list("created", flat=True)
    # One query: both sets, as UNION ALL.
    times = [int(at.timestamp() * 1_000_000) for at in issued.union(in_flight, all=True)]
    return replay(times, bucket)


def prune_ledger(now: datetime.datetime | None = None, batch: int = 10_000) -> int:
    """Deletes the ledger rows no rebuild can need any more (older than the longest registered-
    domain period, default or override, plus a day), in batches; returns how many."""
    now = now or timezone.now()
    longest = max(
        [
            settings.QUOTA_REGISTERED_DOMAIN_PERIOD_SECONDS,
            *QuotaOverride.objects.filter(kind=QuotaKind.REGISTERED_DOMAIN).values_list(
                "period_seconds", flat=True
            ),
        ]
    )
    cutoff = now - datetime.timedelta(seconds=longest + 86400)
    deleted = 0
    while True:
        ids = list(Issuance.objects.filter(issued_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += Issuance.objects.filter(pk__in=ids).delete()[0]


# --- deciding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A domain whose check passed and that is about to get an order."""

    domain_id: int
    name: str
    reservation: uuid.UUID | None  # the one it holds from an earlier wait, if any
    # A renewal at Let's Encrypt: the domain holds a Let's Encrypt certificate for exactly its name.
    renewal: bool


@dataclass(frozen=True)
class Granted:
    reservation: uuid.UUID | None  # None: nothing was spent (the quota store was down; see below)
    renewal: bool


@dataclass(frozen=True)
class Waiting:
    until: datetime.datetime
    message: str
    reservation: uuid.UUID | None


def when(at: datetime.datetime) -> str:
    return f"{at.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _period(seconds: int) -> str:
    for unit, size in (("week", WEEK), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}s" if count != 1 else unit
    return f"{seconds} seconds"


def waiting_message(bucket: Bucket, until: datetime.datetime) -> str:
    """Why a domain waits, in the customer's words."""
    period = bucket.period_us // 1_000_000
    at = when(until)
    if bucket.key.startswith(REGISTERED_DOMAIN_PREFIX):
        adjective = "weekly " if period == WEEK else ""
        return (
            f"{adjective}certificate limit for {bucket.subject} reached; next attempt at {at} "
            f"(Let's Encrypt issues at most {bucket.capacity} certificates per registered domain "
            f"per {_period(period)})"
        )
    if bucket.key.startswith(FAILED_AUTHZ_PREFIX):
        return (
            f"{bucket.capacity} failed validations of {bucket.subject} in the last {_period(period)}: "
            f"Let's Encrypt allows {bucket.capacity}; next attempt at {at}"
        )
    if bucket.key.startswith(EXACT_SET_PREFIX):
        return (
            f"certificate limit for exactly {bucket.subject.replace(',', ', ')} reached; next attempt at "
            f"{at} (Let's Encrypt issues at most {bucket.capacity} certificates for the same names "
            f"per {_period(period)})"
        )
    if bucket.key.startswith(ISSUER_PREFIX):
        return (
            f"the platform's limit of new orders at {bucket.subject} is reached; next attempt at {at} "
            f"(at most {bucket.capacity} per {_period(period)})"
        )
    return (
        f"the platform's limit of new orders at Let's Encrypt is reached; next attempt at {at} "
        f"(at most {bucket.capacity} per {_period(period)})"
    )


def reserve(
    candidates: list[Candidate], account_id: int, now: datetime.datetime | None = None
) -> dict[int, Granted | Waiting]:
    """Spends each candidate's tokens (one script call each): Granted, or Waiting with the time its
    booked tokens arrive. With the quota store down, new certificates wait (unless QUOTA_FAIL_OPEN)
    and renewals go ahead without spending."""
    now = now or timezone.now()
    if not candidates:
        return {}
    issuer = issuer_of_account(account_id)
    if issuer is not None and issuer.limits != "letsencrypt":
        return _reserve_at(issuer, candidates)
    overrides = load_overrides([[c.name] for c in candidates], [account_id])
    quota = get_quota()
    outcome: dict[int, Granted | Waiting] = {}
    for candidate in candidates:
        renewal = candidate.renewal
        buckets = buckets_for([candidate.name], account_id, renewal=renewal, overrides=overrides)
        reservation = candidate.reservation or uuid.uuid4()
        try:
            decision = quota.spend(str(reservation), buckets)
        except QuotaUnavailable as exc:
            if renewal or settings.QUOTA_FAIL_OPEN:
                logger.warning("%s: ordering without a quota check: %s", candidate.name, exc)
                outcome[candidate.domain_id] = Granted(None, renewal)
                continue
            retry = settings.QUOTA_UNAVAILABLE_RETRY_SECONDS
            outcome[candidate.domain_id] = Waiting(
                now + datetime.timedelta(seconds=retry),
                "Let's Encrypt's limits could not be checked (the quota store is unreachable); "
                f"next attempt at {when(now + datetime.timedelta(seconds=retry))}",
                candidate.reservation,
            )
            continue
        if decision.granted:
            outcome[candidate.domain_id] = Granted(reservation, renewal)
            continue
        # From the clock after the spend, so the domain is never due before its token is there.
        until = timezone.now() + datetime.timedelta(microseconds=decision.wait_us)
        blocking = next((b for b in buckets if b.key == decision.waiting_for), buckets[0])
        outcome[candidate.domain_id] = Waiting(until, waiting_message(blocking, until), reservation)
    return outcome


def issuer_bucket(issuer: IssuerSetting) -> Bucket:
    """The bucket of an issuer's own limit: `orders_limit` new orders per `orders_period_seconds`."""
    capacity, period = issuer.orders_limit, issuer.orders_period_seconds
    return Bucket(
        f"{ISSUER_PREFIX}{issuer.name}", capacity, -(-period * 1_000_000 // capacity), subject=issuer.name
    )


def _reserve_at(issuer: IssuerSetting, candidates: list[Candidate]) -> dict[int, Granted | Waiting]:
    """reserve() for an issuer that does not spend Let's Encrypt's buckets: its own bucket when it
    has one, else nothing. A token a candidate booked while it waited for Let's Encrypt's goes
    back (and its order takes a new reservation); one it booked here keeps its place."""
    outcome: dict[int, Granted | Waiting] = {}
    quota = get_quota()
    bucket = issuer_bucket(issuer) if issuer.limits == "own" else None
    for candidate in candidates:
        reservation = candidate.reservation
        if reservation and refund(reservation, [candidate.name], None, f"its order goes to {issuer.name}"):
            reservation = None
        if bucket is None:
            outcome[candidate.domain_id] = Granted(None, candidate.renewal)
            continue
        reservation = reservation or uuid.uuid4()
        try:
            decision = quota.spend(str(reservation), [bucket])
        except QuotaUnavailable as exc:
            # Its CA enforces its limit too (and says so with a 429): ordering is safe, only blind.
            logger.warning("%s: ordering at %s without a quota check: %s", candidate.name, issuer.name, exc)
            outcome[candidate.domain_id] = Granted(None, candidate.renewal)
            continue
        if decision.granted:
            outcome[candidate.domain_id] = Granted(reservation, candidate.renewal)
            continue
        until = timezone.now() + datetime.timedelta(microseconds=decision.wait_us)
        outcome[candidate.domain_id] = Waiting(until, waiting_message(bucket, until), reservation)
    return outcome


# --- after the order ---------------------------------------------------------------------------


def _all_buckets(names: list[str], account_id: int | None, limits: bool = True) -> list[Bucket]:
    """Every bucket an order for `names` may have spent from (a renewal spent from fewer: the
    others hold nothing of its reservation and are left alone); with their limits (the database
    overrides) unless only their keys matter."""
    if account_id is None:
        account_id = (
            AcmeAccount.objects.filter(directory_url=settings.ACME_DIRECTORY_URL)
            .values_list("pk", flat=True)
            .first()
        )
    else:
        issuer = issuer_of_account(account_id)
        if issuer is not None and issuer.limits != "letsencrypt":
            return [issuer_bucket(issuer)] if issuer.limits == "own" else []
    # With the overrides: a refund gives back the interval the spend took.
    overrides = load_overrides([names], [account_id] if account_id else []) if limits else {}
    # The check-only buckets hold no reservation.
    buckets = [
        bucket
        for bucket in buckets_for(names, account_id or 0, renewal=False, overrides=overrides)
        if not bucket.check_only
    ]
    return buckets if account_id else buckets[:-1]


def issuer_of_account(account_id: int | None) -> IssuerSetting | None:
    """The configured issuer of the ACME account `account_id` (None: none, or no longer configured)."""
    if account_id is None:
        return None
    directory_url = AcmeAccount.objects.filter(pk=account_id).values_list("directory_url", flat=True).first()
    return by_directory(directory_url) if directory_url else None


def spends_letsencrypt_limits(directory_url: str) -> bool:
    """Whether the orders of an ACME account at `directory_url` spend Let's Encrypt's buckets: its
    issuer's `limits` (a directory no longer configured: yes, the safe side)."""
    issuer = by_directory(directory_url)
    return issuer is None or issuer.limits == "letsencrypt"


def refund(reservation: uuid.UUID | None, names: list[str], account_id: int | None, why: str) -> bool:
    """The CA certainly issued nothing for this reservation (of an order for `names` by the ACME
    account `account_id`, the current one if None): its tokens go back, once."""
    if reservation is None:
        return False
    try:
        done = get_quota().refund(str(reservation), _all_buckets(names, account_id))
    except QuotaUnavailable as exc:
        # The token stays spent until it refills: safe, only slower.
        logger.warning("could not refund quota reservation %s (%s): %s", reservation, why, exc)
        return False
    if done:
        logger.info("refunded quota reservation %s: %s", reservation, why)
    return done


def commit(reservation: uuid.UUID | None, names: list[str], account_id: int | None) -> None:
    """The certificate is stored: its tokens stay spent."""
    if reservation is None:
        return
    try:
        get_quota().commit(str(reservation), _all_buckets(names, account_id, limits=False))
    except QuotaUnavailable as exc:
        # The reservation goes with its buckets; nothing can refund it meanwhile (its order is valid).
        logger.warning("could not commit quota reservation %s: %s", reservation, exc)


def charge_failed_authorization(account_id: int, identifier: str, authorization_url: str) -> bool:
    """The CA marked this authorization invalid: one token of (account, identifier) is spent,
    once per authorization however often a step reads it. True when this call spent it."""
    once = FAILED_AUTHZ_ONCE_PREFIX + hashlib.sha256(authorization_url.encode()).hexdigest()[:32]
    try:
        return get_quota().charge(failed_authz_bucket(identifier, account_id), once)
    except QuotaUnavailable as exc:
        # Uncounted here, still counted at the CA: at worst its 429 makes the domain wait.
        logger.warning("could not count the failed authorization of %s: %s", identifier, exc)
        return False


def sync_failed_authorizations(identifier: str, account_id: int, retry_at: datetime.datetime) -> bool:
    """Let's Encrypt refused an order for too many failed authorizations of `identifier` until
    `retry_at`: ours agrees from now on. Returns whether ours had to change."""
    try:
        bucket = failed_authz_bucket(identifier, account_id)
        return get_quota().sync(bucket, int(retry_at.timestamp() * 1_000_000))
    except QuotaUnavailable as exc:
        logger.warning("could not sync the failed authorizations of %s with the CA: %s", identifier, exc)
        return False


def sync_registered_domains(names: list[str], retry_at: datetime.datetime) -> list[str]:
    """Let's Encrypt says a registered domain's certificates are used up until `retry_at` (another
    ACME client spent them): our buckets agree from now on. Returns the domains changed."""
    overrides = load_overrides([names], [])
    changed = []
    for domain in registered_domains(names):
        bucket = registered_domain_bucket(domain, overrides)
        try:
            if get_quota().sync(bucket, int(retry_at.timestamp() * 1_000_000)):
                changed.append(domain)
        except QuotaUnavailable as exc:
            logger.warning("could not sync the quota of %s with the CA: %s", domain, exc)
    return changed


@dataclass(frozen=True)
class RegisteredDomainQuota:
    """What operators see of one registered domain's limit."""

    registered_domain: str
    capacity: int
    period_seconds: int
    overridden: bool
    tokens_left: int | None  # None: the quota store is unreachable
    next_token_at: datetime.datetime | None  # None: full (or unknown)

    @property
    def limit(self) -> str:
        return f"{self.capacity} per {_period(self.period_seconds)}" + (
            " (override)" if self.overridden else ""
        )


def quota_of(domains: list[str], now: datetime.datetime | None = None) -> list[RegisteredDomainQuota]:
    """Tokens left and the next token's arrival for each registered domain: one query for the
    overrides and one Redis round trip, whatever the number of domains."""
    now = now or timezone.now()
    overrides = load_overrides([[d] for d in domains], [])
    buckets = [registered_domain_bucket(domain, overrides) for domain in domains]
    try:
        levels: list[Level | None] = list(get_quota().peek_many(buckets))
    except QuotaUnavailable:
        levels = [None] * len(buckets)
    report = []
    for bucket, level in zip(buckets, levels, strict=True):
        next_at = None
        if level is not None and level.tokens_left < bucket.capacity:
            next_at = now + datetime.timedelta(microseconds=level.next_token_in_us)
        report.append(
            RegisteredDomainQuota(
                bucket.subject,
                bucket.capacity,
                bucket.period_us // 1_000_000,
                (QuotaKind.REGISTERED_DOMAIN, bucket.subject) in overrides,
                None if level is None else level.tokens_left,
                next_at,
            )
        )
    return report
