"""Operators' view of regions, apps and domains."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from domains.models import App, Domain, DomainEvent, Region
from domains.names import to_unicode
from domains.services import (
    InvalidDomainName,
    clean_domain_name,
    create_domain,
    delete_domain,
    dns_records_to_add,
    retry_now,
    set_letsencrypt,
)
from workers.quota_policy import quota_of


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


class DomainEventInline(admin.TabularInline):
    model = DomainEvent
    extra = 0
    can_delete = False
    fields = ["created", "from_status", "to_status", "reason"]
    readonly_fields = fields
    ordering = ["-created", "-pk"]
    verbose_name_plural = "History"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainForm
    inlines = [DomainEventInline]
    actions = ["retry_now_action"]
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
    search_fields = ["name", "app__name", "registered_domain"]
    list_select_related = ["app"]
    raw_id_fields = ["app"]
    readonly_fields = [
        "status",
        "registered_domain",
        "quota",
        "dns_records",
        "consecutive_failures",
        "next_attempt_at",
        "last_checked_at",
        "last_error",
        "created",
        "updated",
    ]

    def get_inlines(self, request, obj=None):
        # A domain being added has no history yet.
        return self.inlines if obj is not None else []

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

    def delete_model(self, request, obj: Domain) -> None:
        delete_domain(obj)

    def delete_queryset(self, request, queryset) -> None:
        for domain in queryset:
            delete_domain(domain)

    @admin.action(description="Retry now (check DNS, or continue the order, with the backoff reset)")
    def retry_now_action(self, request, queryset) -> None:
        for domain in queryset:
            self.message_user(request, retry_now(domain), messages.INFO)

    @admin.display(description="Let's Encrypt quota of its registered domain")
    def quota(self, obj: Domain) -> str:
        if not obj.registered_domain:
            return ""
        entry = quota_of([obj.registered_domain])[0]
        if entry.tokens_left is None:
            return "unknown: the quota store is unreachable"
        next_at = f"; next token at {entry.next_token_at:%Y-%m-%d %H:%M:%S %Z}" if entry.next_token_at else ""
        return f"{entry.tokens_left} of {entry.limit} left{next_at}"

    @admin.display(description="DNS records to add")
    def dns_records(self, obj: Domain) -> str:
        return "\n".join(dns_records_to_add(obj)) if obj.pk else ""

    @admin.display(description="Unicode name")
    def unicode_name(self, obj: Domain) -> str:
        shown = to_unicode(obj.name)
        return shown if shown != obj.name else ""
