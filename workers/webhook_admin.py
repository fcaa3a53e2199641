"""Webhooks in the admin (issue 16; registered by workers/admin.py importing this module): the
platform-wide endpoints operators add (every app's events), every endpoint's state, the
deliveries with their attempts, and the actions: rotate a secret, enable, send what waits now,
redeliver.

A secret is shown once, in the message after the endpoint is added or its secret rotated; the form
never holds it. A URL that names, or whose name resolves to, an address webhooks are never sent to
is refused with the reason (and every send checks again)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.postgres.forms import SimpleArrayField
from django.core.exceptions import ValidationError

from domains.models import EventType
from domains.read_only_admin import ReadOnlyAdmin
from domains.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domains.webhooks import (
    WebhookRefused,
    create_endpoint,
    enable_endpoint,
    redeliver,
    retry_now,
    rotate_secret,
    validate_destination,
    validate_event_types,
)
from workers.webhook_send import destination_problem


class EndpointForm(forms.ModelForm):
    event_types = SimpleArrayField(
        forms.CharField(),
        required=False,
        help_text="Comma-separated event types, empty for all: " + ", ".join(EventType.values),
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["app", "url", "description", "event_types"]

    def clean_url(self) -> str:
        try:
            return validate_destination(self.cleaned_data["url"], destination_problem)
        except WebhookRefused as exc:
            raise ValidationError(str(exc)) from None

    def clean_event_types(self) -> list[str]:
        try:
            return validate_event_types(self.cleaned_data.get("event_types") or [])
        except WebhookRefused as exc:
            raise ValidationError(str(exc)) from None


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints: an app's (its owner adds them through the API or the CLI) or, with no app, the
    platform's, which get every app's events."""

    form = EndpointForm
    list_display = ["id", "url", "app", "events", "enabled", "last_success_at", "failing_since"]
    list_filter = ["enabled"]
    search_fields = ["url", "app__name", "description"]
    raw_id_fields = ["app"]
    readonly_fields = [
        "enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "last_success_at",
        "previous_secret_until",
        "created",
        "updated",
    ]
    actions = ["rotate_secrets", "enable_endpoints", "retry_waiting"]

    @admin.display(description="events")
    def events(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types) or "all"

    def save_model(self, request, obj: WebhookEndpoint, form, change: bool) -> None:
        if not change:
            created, secret = create_endpoint(obj.app, obj.url, obj.event_types, obj.description)
            obj.pk, obj.secret, obj.created = created.pk, created.secret, created.created
            obj._state.adding = False
            self.message_user(
                request,
                f"Endpoint {obj.pk} added. Its signing secret, shown this once: {secret}",
                messages.WARNING,
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Rotate the signing secret (the old one signs for 24 hours more)")
    def rotate_secrets(self, request, queryset) -> None:
        for endpoint in queryset:
            secret = rotate_secret(endpoint)
            self.message_user(
                request,
                f"Endpoint {endpoint.pk}: new signing secret, shown this once: {secret}",
                messages.WARNING,
            )

    @admin.action(description="Enable (after it was disabled for failing)")
    def enable_endpoints(self, request, queryset) -> None:
        for endpoint in queryset:
            enable_endpoint(endpoint)
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled.")

    @admin.action(description="Send waiting deliveries now (instead of after their backoff)")
    def retry_waiting(self, request, queryset) -> None:
        retried = sum(retry_now(endpoint) for endpoint in queryset)
        self.message_user(request, f"The waiting deliveries of {retried} domain(s) are sent now, in order.")


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["at", "status_code", "latency_ms", "error", "response_excerpt"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Deliveries, as the workers write them; redeliver sends one again with the same webhook-id."""

    list_display = [
        "id",
        "endpoint",
        "event_type",
        "domain",
        "state",
        "attempts",
        "last_status_code",
        "created",
    ]
    list_filter = ["state"]
    search_fields = ["event__domain_name", "endpoint__url"]
    list_select_related = ["endpoint", "event"]
    readonly_fields = [
        "endpoint",
        "event",
        "seq",
        "domain_id",
        "state",
        "attempts",
        "next_attempt_at",
        "give_up_at",
        "created",
        "delivered_at",
        "last_status_code",
        "last_error",
    ]
    inlines = [AttemptInline]
    actions = ["redeliver_deliveries"]

    @admin.display(description="event")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="domain")
    def domain(self, delivery: WebhookDelivery) -> str:
        return delivery.event.domain_name

    @admin.action(description="Redeliver (same webhook-id)")
    def redeliver_deliveries(self, request, queryset) -> None:
        sent = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                redeliver(delivery)
                sent += 1
            except WebhookRefused as exc:
                self.message_user(request, f"Delivery {delivery.pk}: {exc}", messages.ERROR)
        if sent:
            self.message_user(request, f"{sent} delivery(ies) will be sent again.")

    def has_change_permission(self, request, obj=None) -> bool:
        # The actions need it; the fields stay read-only.
        return request.user.is_staff
