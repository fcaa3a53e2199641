"""Email notifications in the admin (issue 16; registered by domains/admin.py importing this
module): each user's choices and the state of their mails (an SMTP error, when the next try is),
with an action to mail what waits at the next run; and the mail lines, read only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from domains.models import EventType
from domains.notification_models import EmailNotification, NotificationSettings
from domains.notifications import NotificationsRefused, digest_of
from domains.read_only_admin import ReadOnlyAdmin


class NotificationSettingsForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices, required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = NotificationSettings
        fields = ["user", "email_enabled", "event_types", "digest_seconds", "all_apps"]
        help_texts = {
            "digest_seconds": "No two mails closer than this many seconds (at most a week); empty: the "
            "platform's NOTIFICATION_DIGEST_SECONDS; 0: each event as it is gathered.",
            "all_apps": "Staff users only: every app's events, not only the apps they own.",
        }

    def clean_digest_seconds(self) -> int | None:
        try:
            return digest_of(self.cleaned_data.get("digest_seconds"))
        except NotificationsRefused as exc:
            raise ValidationError(str(exc)) from None

    def clean(self) -> dict:
        data = super().clean()
        user = data.get("user") or getattr(self.instance, "user", None)
        if data.get("all_apps") and user is not None and not user.is_staff:
            self.add_error("all_apps", "Only staff users can be mailed about every app's events.")
        # In the catalogue's order, as the API saves them.
        data["event_types"] = [
            value for value in EventType.values if value in (data.get("event_types") or [])
        ]
        return data


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    """A user without a row gets the defaults; a row is made when they choose or are first mailed."""

    form = NotificationSettingsForm
    list_display = [
        "user",
        "address",
        "email_enabled",
        "digest",
        "all_apps",
        "waiting",
        "last_mailed_at",
        "mail_failures",
        "mail_retry_at",
    ]
    list_filter = ["email_enabled", "all_apps"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = [
        "last_mailed_at",
        "mail_retry_at",
        "mail_failures",
        "last_mail_error",
        "created",
        "updated",
    ]
    actions = ["mail_now"]

    @admin.display(description="address")
    def address(self, choices: NotificationSettings) -> str:
        return choices.user.email or "(none)"

    def get_queryset(self, request):
        # The waiting lines counted in the list's own query, not one query per row.
        waiting = (
            EmailNotification.objects.filter(user_id=OuterRef("user_id"), sent_at=None)
            .order_by()
            .values("user_id")
            .annotate(n=Count("id"))
            .values("n")
        )
        return super().get_queryset(request).annotate(waiting_count=Coalesce(Subquery(waiting), 0))

    @admin.display(description="waiting", ordering="waiting_count")
    def waiting(self, choices: NotificationSettings) -> int:
        return choices.waiting_count

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        # The user a row belongs to is chosen once.
        return [*self.readonly_fields, "user"] if obj is not None else self.readonly_fields

    @admin.action(description="Mail what waits at the next run (skip the digest wait and the SMTP backoff)")
    def mail_now(self, request, queryset) -> None:
        count = queryset.update(last_mailed_at=None, mail_retry_at=None)
        self.message_user(request, f"{count} user(s) will be mailed what waits for them within 30 s.")


@admin.register(EmailNotification)
class EmailNotificationAdmin(ReadOnlyAdmin):
    """One line per event and user: waiting (no sent time) or sent in the mail of that time."""

    list_display = ["id", "user", "event_type", "domain", "created", "sent_at"]
    list_filter = [("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "user__email", "event__domain_name"]
    list_select_related = ["user", "event"]

    @admin.display(description="event")
    def event_type(self, line: EmailNotification) -> str:
        return line.event.type

    @admin.display(description="domain")
    def domain(self, line: EmailNotification) -> str:
        return line.event.domain_name
