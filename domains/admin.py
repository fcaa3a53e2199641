"""Operators' view of regions, apps and domains."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from domains.models import App, Domain, Region
from domains.names import to_unicode
from domains.services import InvalidDomainName, clean_domain_name, create_domain, set_letsencrypt


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["name", "domain_suffix", "cname_target", "ingress_ipv4", "ingress_ipv6", "created"]
    search_fields = ["name", "domain_suffix"]
    readonly_fields = ["created", "updated"]


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "owner", "default_hostname", "created"]
    list_filter = ["region"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["region", "owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["created", "updated"]


class DomainForm(forms.ModelForm):
    class Meta:
        model = Domain
        fields = ["app", "name", "letsencrypt_enabled"]

    def clean_name(self) -> str:
        try:
            return clean_domain_name(self.cleaned_data["name"])
        except InvalidDomainName as exc:
            raise ValidationError(str(exc), code=exc.rule) from None


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainForm
    list_display = [
        "name",
        "unicode_name",
        "app",
        "status",
        "letsencrypt_enabled",
        "consecutive_failures",
        "next_attempt_at",
        "last_checked_at",
        "last_error",
    ]
    list_filter = ["status", "letsencrypt_enabled", "app__region"]
    search_fields = ["name", "app__name"]
    list_select_related = ["app"]
    raw_id_fields = ["app"]
    readonly_fields = [
        "status",
        "consecutive_failures",
        "next_attempt_at",
        "last_checked_at",
        "last_error",
        "created",
        "updated",
    ]

    def get_readonly_fields(self, request, obj=None):
        # A domain's name and app are its identity: a different name is a different domain.
        fixed = ["name", "app"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_model(self, request, obj: Domain, form, change: bool) -> None:
        if change:
            if "letsencrypt_enabled" in form.changed_data:
                set_letsencrypt(obj, obj.letsencrypt_enabled)
            return
        created = create_domain(obj.app, obj.name, letsencrypt=obj.letsencrypt_enabled)
        obj.pk = created.pk
        obj.refresh_from_db()

    @admin.display(description="Unicode name")
    def unicode_name(self, obj: Domain) -> str:
        shown = to_unicode(obj.name)
        return shown if shown != obj.name else ""
