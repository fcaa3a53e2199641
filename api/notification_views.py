"""The customer API's email notifications (issue 16): the token's user's choices.

GET    notifications      the choices (defaults filled in), the address mails go to, the mail state
PATCH  notifications      {email_enabled?, events?, digest_seconds?, all_apps? (staff)}
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from api.views import _errors
from api.webhook_views import EventTypesField
from domains.notification_models import MAX_DIGEST_SECONDS, EmailNotification
from domains.notifications import NotificationsRefused, notification_settings, update_notifications


class NotificationsSerializer(serializers.Serializer):
    email = serializers.CharField(
        allow_blank=True, help_text="The account's address; empty: no mail is sent."
    )
    email_enabled = serializers.BooleanField()
    events = serializers.ListField(child=serializers.CharField(), help_text="The event types mailed.")
    digest_seconds = serializers.IntegerField(
        allow_null=True, help_text="No two mails closer than this; null: the platform's default."
    )
    digest_effective_seconds = serializers.IntegerField()
    all_apps = serializers.BooleanField(help_text="Staff only: every app's events, not only your apps'.")
    waiting = serializers.IntegerField(help_text="Events waiting for the next mail.")
    last_mailed_at = serializers.DateTimeField(allow_null=True)
    last_mail_error = serializers.CharField(allow_blank=True)


class NotificationsUpdateSerializer(serializers.Serializer):
    email_enabled = serializers.BooleanField(required=False)
    events = EventTypesField(required=False, max_length=20)
    digest_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_DIGEST_SECONDS
    )
    all_apps = serializers.BooleanField(required=False)


def present_notifications(user) -> dict:
    found = notification_settings(user)
    return {
        "email": user.email,
        "email_enabled": found.email_enabled,
        "events": list(found.event_types),
        "digest_seconds": found.digest_seconds,
        "digest_effective_seconds": found.digest,
        "all_apps": found.all_apps,
        "waiting": EmailNotification.objects.filter(user=user, sent_at=None).count(),
        "last_mailed_at": found.last_mailed_at,
        "last_mail_error": found.last_mail_error,
    }


class Notifications(GenericAPIView):
    serializer_class = NotificationsSerializer

    @extend_schema(responses={200: NotificationsSerializer, **_errors(401)})
    def get(self, request):
        """Which events you are mailed about, and how often."""
        return Response(present_notifications(request.user))

    @extend_schema(
        request=NotificationsUpdateSerializer,
        responses={200: NotificationsSerializer, **_errors(400, 401, 411, 413, 429)},
    )
    def patch(self, request):
        """Changes what is given: mails on or off, the event types, the digest window (null: the
        platform's default; 0: each event as soon as it is gathered)."""
        data = NotificationsUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        unknown = sorted(set(request.data) - set(data.fields)) if isinstance(request.data, dict) else []
        if unknown:
            raise ValidationError({unknown[0]: [f"Unknown field; the fields are: {', '.join(data.fields)}."]})
        values = dict(data.validated_data)
        if "events" in values:
            values["event_types"] = values.pop("events")
        try:
            update_notifications(request.user, **values)
        except NotificationsRefused as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(present_notifications(request.user))
