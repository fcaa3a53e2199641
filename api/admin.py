"""API tokens in the admin: created here (shown once), listed, revoked; never shown again."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from api.models import ApiToken
from api.tokens import create_token, revoke_token


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["name", "user", "prefix", "created", "last_used", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username", "prefix"]
    raw_id_fields = ["user"]
    actions = ["revoke_action"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "name", "prefix", "created", "last_used", "revoked"] if obj else []

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            return
        row, token = create_token(obj.user, obj.name)
        obj.pk = row.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"API token for {row.user}: {token}  (copy it now: it is not stored and cannot be shown again)",
            messages.WARNING,
        )

    def has_change_permission(self, request, obj=None) -> bool:
        # A token is never edited: it is revoked and another one created.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke (the token stops working at once)")
    def revoke_action(self, request, queryset) -> None:
        revoked = sum(revoke_token(row) for row in queryset)
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)
