"""The customer API's webhooks (issue 16): an app's endpoints, their secrets (shown once, at
creation or rotation), their deliveries with every attempt, and redelivery.

    GET    apps/<app>/webhooks                                   the app's endpoints
    POST   apps/<app>/webhooks                                   {url, events?, description?}
    GET    apps/<app>/webhooks/<id>                              one endpoint
    DELETE apps/<app>/webhooks/<id>                              removes it and its deliveries
    POST   apps/<app>/webhooks/<id>/rotate-secret                a new secret; the old one signs 24 h more
    POST   apps/<app>/webhooks/<id>/enable                       a disabled endpoint back on
    POST   apps/<app>/webhooks/<id>/retry                        its waiting deliveries sent now
    GET    apps/<app>/webhooks/<id>/deliveries                   newest first (?state=)
    GET    apps/<app>/webhooks/<id>/deliveries/<delivery>        with its attempts
    POST   apps/<app>/webhooks/<id>/deliveries/<delivery>/redeliver
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from api.pagination import ById, NewestEventFirst
from api.serializers import ErrorSerializer
from api.views import _errors, get_app
from domains.models import EventType
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
from domains.webhooks import (
    MAX_DESCRIPTION,
    WebhookRefused,
    create_endpoint,
    enable_endpoint,
    redeliver,
    retry_now,
    rotate_secret,
)
from workers.webhook_send import destination_problem


class EndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    events = serializers.ListField(child=serializers.CharField(), help_text="Empty: every event type.")
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField(allow_blank=True)
    failing_since = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    previous_secret_valid_until = serializers.DateTimeField(allow_null=True)
    created = serializers.DateTimeField()


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(help_text="Shown this once: keep it to verify signatures.")


class EventTypesField(serializers.ListField):
    """A list of event types whose errors come as one flat list of messages, as every field's do
    in this API (DRF keys a list's item errors by index)."""

    child = serializers.ChoiceField(choices=EventType.values)

    def run_child_validation(self, data):
        try:
            return super().run_child_validation(data)
        except ValidationError as exc:
            detail = exc.detail
            if isinstance(detail, dict):
                detail = [
                    f"item {index + 1}: {message}"
                    for index, messages in detail.items()
                    for message in messages
                ]
            raise ValidationError(detail) from None


class EndpointCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    events = EventTypesField(required=False, default=list, max_length=20)
    description = serializers.CharField(
        max_length=MAX_DESCRIPTION, required=False, allow_blank=True, default=""
    )


class AttemptSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField()
    response_excerpt = serializers.CharField(allow_blank=True, help_text="The first 1 KiB of the answer.")
    error = serializers.CharField(allow_blank=True)


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.UUIDField(help_text="The webhook-id header: the same on every attempt.")
    event_type = serializers.CharField()
    domain = serializers.CharField()
    state = serializers.ChoiceField(choices=DeliveryState.values)
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    created = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)


class DeliveryDetailSerializer(DeliverySerializer):
    attempt_log = AttemptSerializer(many=True)


def present_endpoint(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    data = {
        "id": endpoint.pk,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": endpoint.failing_since,
        "last_success_at": endpoint.last_success_at,
        "previous_secret_valid_until": endpoint.previous_secret_until
        if endpoint.previous_secret is not None
        else None,
        "created": endpoint.created,
    }
    if secret is not None:
        data["secret"] = secret
    return data


def present_delivery(delivery: WebhookDelivery, attempts: bool = False) -> dict:
    data = {
        "id": delivery.pk,
        "event_id": delivery.event_id,
        "event_type": delivery.event.type,
        "domain": delivery.event.domain_name,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created": delivery.created,
        "delivered_at": delivery.delivered_at,
        # When a pending delivery may be tried (after the deliveries of its domain before it).
        "next_attempt_at": delivery.next_attempt_at,
    }
    if attempts:
        data["attempt_log"] = AttemptSerializer(delivery.attempt_log.all()[:50], many=True).data
    return data


def get_endpoint(request, app: str, endpoint_id: int) -> WebhookEndpoint:
    found = get_app(request, app)
    endpoint = WebhookEndpoint.objects.filter(app=found, pk=endpoint_id).first()
    if endpoint is None:
        raise Http404(f"no webhook endpoint {endpoint_id} on {app}")
    return endpoint


def get_delivery(request, app: str, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
    endpoint = get_endpoint(request, app, endpoint_id)
    delivery = (
        WebhookDelivery.objects.select_related("event", "endpoint")
        .filter(endpoint=endpoint, pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise Http404(f"no delivery {delivery_id} of webhook endpoint {endpoint_id}")
    return delivery


class WebhookList(GenericAPIView):
    serializer_class = EndpointSerializer
    pagination_class = ById

    @extend_schema(responses={200: EndpointSerializer(many=True), **_errors(400, 401, 404)})
    def get(self, request, app):
        """The app's webhook endpoints (never their secrets)."""
        found = get_app(request, app)
        page = self.paginate_queryset(WebhookEndpoint.objects.filter(app=found))
        return self.get_paginated_response([present_endpoint(endpoint) for endpoint in page])

    @extend_schema(
        request=EndpointCreateSerializer,
        responses={201: EndpointWithSecretSerializer, **_errors(400, 401, 404, 411, 413, 429)},
    )
    def post(self, request, app):
        """Adds an endpoint; the answer holds its signing secret, shown this once. A URL that names an
        address webhooks are never sent to (loopback, private, link-local...) is refused, and so is a
        name that resolves to one now (it is checked again at every send)."""
        found = get_app(request, app)
        data = EndpointCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            endpoint, secret = create_endpoint(
                found, values["url"], values["events"], values["description"], destination_problem
            )
        except WebhookRefused as exc:
            raise ValidationError({"url": [str(exc)]}) from None
        return Response(present_endpoint(endpoint, secret), status=status.HTTP_201_CREATED)


class WebhookDetail(GenericAPIView):
    serializer_class = EndpointSerializer

    @extend_schema(responses={200: EndpointSerializer, **_errors(401, 404)})
    def get(self, request, app, endpoint):
        """One endpoint."""
        return Response(present_endpoint(get_endpoint(request, app, endpoint)))

    @extend_schema(responses={204: None, **_errors(401, 404, 429)})
    def delete(self, request, app, endpoint):
        """Removes the endpoint with its deliveries and their attempts."""
        get_endpoint(request, app, endpoint).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecret(GenericAPIView):
    serializer_class = EndpointWithSecretSerializer

    @extend_schema(request=None, responses={200: EndpointWithSecretSerializer, **_errors(401, 404, 429)})
    def post(self, request, app, endpoint):
        """A new signing secret, shown this once; the old one keeps signing alongside it for
        WEBHOOK_SECRET_OVERLAP_SECONDS (24 hours), so a receiver can switch without missing one."""
        found = get_endpoint(request, app, endpoint)
        secret = rotate_secret(found)
        return Response(present_endpoint(found, secret))


class WebhookEnable(GenericAPIView):
    serializer_class = EndpointSerializer

    @extend_schema(request=None, responses={200: EndpointSerializer, **_errors(401, 404, 429)})
    def post(self, request, app, endpoint):
        """Turns a disabled endpoint back on; events from now on are sent to it."""
        found = get_endpoint(request, app, endpoint)
        enable_endpoint(found)
        found.refresh_from_db()
        return Response(present_endpoint(found))


class RetrySerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The endpoint.")
    retried = serializers.IntegerField(
        help_text="How many domains' waiting deliveries were made due now (each domain's go in order)."
    )


class WebhookRetry(GenericAPIView):
    serializer_class = RetrySerializer

    @extend_schema(request=None, responses={200: RetrySerializer, **_errors(401, 404, 429)})
    def post(self, request, app, endpoint):
        """Sends the endpoint's waiting deliveries now instead of after their backoff (a receiver
        that is back); those being sent now are left alone."""
        found = get_endpoint(request, app, endpoint)
        return Response({"id": found.pk, "retried": retry_now(found)})


class WebhookDeliveries(GenericAPIView):
    serializer_class = DeliverySerializer
    pagination_class = NewestEventFirst

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "state", str, enum=DeliveryState.values, description="Only deliveries in this state."
            )
        ],
        responses={200: DeliverySerializer(many=True), **_errors(400, 401, 404)},
    )
    def get(self, request, app, endpoint):
        """The endpoint's deliveries, newest event first."""
        found = get_endpoint(request, app, endpoint)
        deliveries = WebhookDelivery.objects.filter(endpoint=found).select_related("event")
        wanted = request.query_params.get("state")
        if wanted:
            if wanted not in DeliveryState.values:
                raise ValidationError({"state": [f"one of {', '.join(DeliveryState.values)}"]})
            deliveries = deliveries.filter(state=wanted)
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response([present_delivery(delivery) for delivery in page])


class WebhookDeliveryDetail(GenericAPIView):
    serializer_class = DeliveryDetailSerializer

    @extend_schema(responses={200: DeliveryDetailSerializer, **_errors(401, 404)})
    def get(self, request, app, endpoint, delivery):
        """One delivery with its attempts, newest first (status, latency, the answer's first 1 KiB)."""
        return Response(present_delivery(get_delivery(request, app, endpoint, delivery), attempts=True))


class WebhookRedeliver(GenericAPIView):
    serializer_class = DeliverySerializer

    @extend_schema(
        request=None,
        responses={
            202: DeliverySerializer,
            409: OpenApiResponse(ErrorSerializer, description="The endpoint is disabled."),
            **_errors(401, 404, 429),
        },
    )
    def post(self, request, app, endpoint, delivery):
        """Sends the delivery's event again, with the same webhook-id, after any earlier pending
        delivery of its domain to this endpoint."""
        found = get_delivery(request, app, endpoint, delivery)
        try:
            redeliver(found)
        except WebhookRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(present_delivery(found), status=status.HTTP_202_ACCEPTED)
