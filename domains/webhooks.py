"""Webhook endpoints as customers and operators manage them (issue 16): adding one (its secret
shown once), rotating its secret (the old one signing too for WEBHOOK_SECRET_OVERLAP_SECONDS),
removing it, redelivering a delivery; and the body an event is sent as.

The URL's form and any address it names literally are checked here (domains/webhook_targets.py);
a name is resolved and checked by the caller that can (api/, the admin), and again at every send.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from certificates.sealing import seal
from domains.enqueue import deliver_webhooks_soon
from domains.models import App, EventType
from domains.webhook_models import WebhookDelivery, WebhookEndpoint
from domains.webhook_targets import RefusedDestination, check_url, host_problem

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
# Standard Webhooks: secrets of 24 to 64 bytes; 32 random ones.
SECRET_BYTES = 32
MAX_DESCRIPTION = 200


class WebhookRefused(ValueError):
    """A webhook request that is not carried out; the message says what is wrong."""


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: whsec_ and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def validate_url(url: str) -> str:
    """The URL, when its form is acceptable and any address it names literally passes the rule;
    WebhookRefused says why not."""
    try:
        parts = check_url(url, allow_http=settings.WEBHOOK_ALLOW_HTTP)
    except RefusedDestination as exc:
        raise WebhookRefused(f"{exc}.") from None
    problem = host_problem(parts.hostname or "", settings.WEBHOOK_ALLOWED_NETWORKS)
    if problem:
        raise WebhookRefused(f"Webhooks are not sent to {problem}.")
    return url


def validate_destination(url: str, check_destination: Callable[[str], str | None] | None) -> str:
    """validate_url, then `check_destination` (the workers' resolver, which this layer cannot
    call): why a URL whose name resolves to a refused address is refused now."""
    url = validate_url(url)
    problem = check_destination(url) if check_destination else None
    if problem:
        raise WebhookRefused(f"Webhooks are not sent there: {problem}.")
    return url


def validate_event_types(values: Iterable[str] | None) -> list[str]:
    """The event types named, in the catalogue's order; WebhookRefused names an unknown one."""
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise WebhookRefused("events is a list of event type names.")
    wanted = {value.strip() for value in values if value.strip()}
    known = [choice.value for choice in EventType]
    unknown = sorted(wanted - set(known))
    if unknown:
        raise WebhookRefused(f"Unknown event type {unknown[0]!r}; the types are: {', '.join(known)}.")
    return [value for value in known if value in wanted]


def create_endpoint(
    app: App | None,
    url: str,
    event_types: Iterable[str] | None = None,
    description: str = "",
    check_destination: Callable[[str], str | None] | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Adds an endpoint for `app` (None: platform-wide); returns it and its secret, which is never
    shown again. `check_destination`: see validate_destination."""
    url = validate_destination(url, check_destination)
    types = validate_event_types(event_types)
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise WebhookRefused(f"The description is longer than {MAX_DESCRIPTION} characters.")
    secret = new_secret()
    endpoint = WebhookEndpoint.objects.create(
        app=app, url=url, event_types=types, description=description, secret=seal(secret.encode("ascii"))
    )
    return endpoint, secret


def rotate_secret(endpoint: WebhookEndpoint, now: datetime.datetime | None = None) -> str:
    """A new secret for the endpoint, returned once; the current one keeps signing alongside it
    for WEBHOOK_SECRET_OVERLAP_SECONDS, so receivers can switch without missing a delivery."""
    now = now or timezone.now()
    secret = new_secret()
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret = locked.secret
        overlap = datetime.timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
        locked.previous_secret_until = now + overlap
        locked.secret = seal(secret.encode("ascii"))
        locked.save(update_fields=["previous_secret", "previous_secret_until", "secret", "updated"])
    endpoint.refresh_from_db()
    return secret


def signing_secrets(endpoint: WebhookEndpoint, now: datetime.datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one during
    its overlap."""
    found = [endpoint.secret.reveal().decode("ascii")]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret is not None and until is not None and until > now:
        found.append(endpoint.previous_secret.reveal().decode("ascii"))
    return found


def enable_endpoint(endpoint: WebhookEndpoint) -> None:
    """Turns a disabled endpoint back on (its failing clock starts afresh)."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=True, disabled_at=None, disabled_reason="", failing_since=None, updated=timezone.now()
    )


# pg_advisory_xact_lock's key for the delivery queues (any constant the product uses nowhere else).
QUEUE_LOCK = 0x6365727477717565


def lock_queue(cursor, exclusive: bool) -> None:
    """Takes the delivery queues' lock (domains.webhook_models.WebhookQueue) until the transaction
    ends, as a statement of its own, so that the next statement's snapshot holds what the last
    holder committed. Exclusively to add deliveries and queues (the fan-out, a redelivery); shared
    to end a queue's delivery and remove the queue once nothing of it is pending (the writes of
    the runs, which never add to a queue). Without it, a write could remove a queue whose new
    delivery it did not see yet, and that delivery would never be sent."""
    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    cursor.execute(f"SELECT {lock}(%s)", [QUEUE_LOCK])


# A delivery pending again, and its queue's cursor before it (the queue made if it has none); the
# queue is due now unless a run holds it.
_REDELIVER = """
WITH again AS (
    UPDATE domains_webhookdelivery SET
        state = 'pending', next_attempt_at = %(now)s, give_up_at = %(give_up_at)s, last_error = ''
    WHERE id = %(id)s
    RETURNING endpoint_id, domain_id, seq
)
INSERT INTO domains_webhookqueue AS q (endpoint_id, domain_id, after_seq, next_attempt_at)
SELECT endpoint_id, domain_id, seq - 1, %(now)s FROM again
ON CONFLICT (endpoint_id, domain_id) DO UPDATE SET
    after_seq = least(q.after_seq, excluded.after_seq),
    next_attempt_at = CASE WHEN q.lease_until IS NULL OR q.lease_until <= %(now)s
        THEN least(q.next_attempt_at, %(now)s) ELSE q.next_attempt_at END
"""

# The waiting deliveries of an endpoint made due now: every queue no run holds.
_RETRY_NOW = """
WITH due AS (
    UPDATE domains_webhookqueue SET next_attempt_at = %(now)s
    WHERE endpoint_id = %(endpoint)s AND next_attempt_at > %(now)s
      AND (lease_until IS NULL OR lease_until <= %(now)s)
    RETURNING domain_id
), waiting AS (
    UPDATE domains_webhookdelivery d SET next_attempt_at = %(now)s
    FROM due
    WHERE d.endpoint_id = %(endpoint)s AND d.domain_id = due.domain_id AND d.state = 'pending'
      AND d.next_attempt_at > %(now)s
)
SELECT count(*) FROM due
"""


def redeliver(delivery: WebhookDelivery, now: datetime.datetime | None = None) -> WebhookDelivery:
    """Sends the delivery's event again (same webhook-id), given up only after another
    WEBHOOK_RETRY_SECONDS; it goes as soon as no pending delivery of its domain with a lower seq
    waits for that endpoint (at once, unless one is being sent now)."""
    now = now or timezone.now()
    if not delivery.endpoint.enabled:
        raise WebhookRefused("The endpoint is disabled; enable it before redelivering.")
    give_up_at = now + datetime.timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS)
    with transaction.atomic(), connection.cursor() as cursor:
        lock_queue(cursor, exclusive=True)
        cursor.execute(_REDELIVER, {"id": delivery.pk, "now": now, "give_up_at": give_up_at})
        deliver_webhooks_soon()
    delivery.refresh_from_db()
    return delivery


def retry_now(endpoint: WebhookEndpoint, now: datetime.datetime | None = None) -> int:
    """Makes the endpoint's waiting deliveries due now instead of after their backoff (a receiver
    that is back); returns how many domains' deliveries were waiting so."""
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RETRY_NOW, {"endpoint": endpoint.pk, "now": now})
        (count,) = cursor.fetchone()
        deliver_webhooks_soon()
    return count


# The fields every event's `data` has; the type's own facts (the certificate, the threshold...)
# come before them, and one of the same name is left out: the common field wins.
COMMON_FIELDS = ("id", "seq", "app", "domain", "from_status", "to_status", "reason", "records")
_OWN_FACTS = "(e.data - ARRAY['" + "', '".join(COMMON_FIELDS) + "'])::text"

# The body an event is sent as (Standard Webhooks: type, timestamp, data), compact JSON built by
# PostgreSQL from the event's row `e` as the delivery run claims it, so that a run parses and
# encodes no JSON of its own. Text is escaped by to_json; `timestamp` is the event's time in UTC,
# with microseconds. (Put together as text: jsonb_build_object(...)::text would build, sort and
# print a jsonb object per event.)
PAYLOAD_SQL = f"""(
    '{{"type":' || to_json(e.type)::text
    || ',"timestamp":"' || to_char(e.created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","data":{{' || coalesce(nullif(substr({_OWN_FACTS}, 2, length({_OWN_FACTS}) - 2), '') || ',', '')
    || '"id":"' || e.id::text || '","seq":' || e.seq::text
    || ',"app":' || to_json(e.app_name)::text || ',"domain":' || to_json(e.domain_name)::text
    || ',"from_status":' || to_json(e.from_status)::text || ',"to_status":' || to_json(e.to_status)::text
    || ',"reason":' || to_json(e.reason)::text || ',"records":' || e.records::text || '}}}}'
)"""


def payload_bodies(event_ids: Iterable) -> dict[str, str]:
    """The bodies (JSON text) the events of `event_ids` are sent as, by event id."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.id::text, {PAYLOAD_SQL} FROM domains_event e WHERE e.id = ANY(%s::uuid[])",  # noqa: S608
            [[str(event_id) for event_id in event_ids]],
        )
        return dict(cursor.fetchall())
