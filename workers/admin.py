from django.contrib import admin
from django.utils import timezone

from domains.read_only_admin import ReadOnlyAdmin
from workers.models import BeatLease, Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["source", "at"]
    readonly_fields = ["source", "at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(BeatLease)
class BeatLeaseAdmin(ReadOnlyAdmin):
    """Which beat leads, for operators; only the beats write it (workers/beat_lease.py). Read-only:
    deleting a live leader's row would let a second beat take a lease it still holds."""

    list_display = ["host", "pid", "term", "leading", "acquired_at", "renewed_at", "expires_at"]
    readonly_fields = ["holder", "host", "pid", "term", "acquired_at", "renewed_at", "expires_at"]

    @admin.display(boolean=True, description="leads now")
    def leading(self, lease: BeatLease) -> bool:
        return lease.expires_at > timezone.now()


# Registered by importing it: the webhooks' admin lives in its own module.
from workers import webhook_admin  # noqa: E402, F401
