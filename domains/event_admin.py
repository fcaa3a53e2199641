"""The outbox in the admin (registered by domains/admin.py importing this module)."""

from __future__ import annotations

from django.contrib import admin

from domains.models import Event
from domains.read_only_admin import ReadOnlyAdmin


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    """The outbox, for operators: what the platform and its customers are told, read-only (only the
    changes themselves write events: domains/events.py)."""

    list_display = ["created", "type", "domain_name", "app_name", "from_status", "to_status", "reason"]
    list_filter = ["type", "to_status"]
    search_fields = ["domain_name", "app_name"]
    readonly_fields = [
        "id",
        "seq",
        "created",
        "type",
        "app_id",
        "app_name",
        "domain_id",
        "domain_name",
        "from_status",
        "to_status",
        "reason",
        "records",
        "data",
        "dedupe_key",
    ]
    ordering = ["-seq"]
    show_full_result_count = False
