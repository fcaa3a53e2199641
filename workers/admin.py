from django.contrib import admin
from django.utils import timezone

from workers.models import BeatLease, Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["source", "at"]
    readonly_fields = ["source", "at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(BeatLease)
class BeatLeaseAdmin(admin.ModelAdmin):
    """Which beat leads, for operators; only the beats write it (workers/beat_lease.py)."""

    list_display = ["host", "pid", "term", "leading", "acquired_at", "renewed_at", "expires_at"]
    readonly_fields = ["holder", "host", "pid", "term", "acquired_at", "renewed_at", "expires_at"]

    @admin.display(boolean=True, description="leads now")
    def leading(self, lease: BeatLease) -> bool:
        return lease.expires_at > timezone.now()

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting the row of a live leader would let a second beat take a lease it still holds.
        return False
