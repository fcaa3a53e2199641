from django.contrib import admin

from workers.models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["source", "at"]
    readonly_fields = ["source", "at"]

    def has_add_permission(self, request) -> bool:
        return False
