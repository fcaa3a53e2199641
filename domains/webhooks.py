"""Webhook endpoints as customers and operators manage them (issue 16): adding one (its secret
shown once), rotating its secret (the old one signing too for WEBHOOK_SECRET_OVERLAP_SECONDS),
removing it, redelivering a delivery; and the payload an event is sent as.

The URL's form and any address it names literally are checked here (domains/webhook_targets.py);
a name is resolved and checked by the caller that can (api/, the admin), and again at every send.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from certificates.sealing import seal
from domains.enqueue import deliver_webhooks_soon
from domains.events import event_time
from domains.models import App, Event, EventType
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
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


def redeliver(delivery: WebhookDelivery, now: datetime.datetime | None = None) -> WebhookDelivery:
    """Sends the delivery's event again (same webhook-id) as soon as the earlier pending deliveries
    of its domain to that endpoint are done."""
    now = now or timezone.now()
    if not delivery.endpoint.enabled:
        raise WebhookRefused("The endpoint is disabled; enable it before redelivering.")
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).exclude(
            state=DeliveryState.PENDING, lease_until__gt=now
        ).update(
            state=DeliveryState.PENDING,
            next_attempt_at=now,
            give_up_at=now + datetime.timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS),
            last_error="",
        )
        deliver_webhooks_soon()
    delivery.refresh_from_db()
    return delivery


def event_payload(event: Event) -> dict:
    """The JSON an event is sent as (Standard Webhooks: type, timestamp, data)."""
    return payload_of(
        event.id,
        event.type,
        event.created,
        event.seq,
        event.app_name,
        event.domain_name,
        event.from_status,
        event.to_status,
        event.reason,
        event.records,
        event.data,
    )


def payload_of(
    event_id,
    type: str,
    created: datetime.datetime,
    seq: int,
    app_name: str,
    domain_name: str,
    from_status: str,
    to_status: str,
    reason: str,
    records: list,
    data: dict,
) -> dict:
    """event_payload from an event's columns, as the delivery run reads them."""
    return {
        "type": type,
        "timestamp": event_time(created),
        "data": {
            # The type's own facts first (the certificate, the threshold...): the common fields win.
            **data,
            "id": str(event_id),
            "seq": seq,
            "app": app_name,
            "domain": domain_name,
            "from_status": from_status,
            "to_status": to_status,
            "reason": reason,
            "records": records,
        },
    }
