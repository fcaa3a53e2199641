"""Writes are throttled per API token (reads are not): API_WRITE_RATE, such as "60/min"."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import SimpleRateThrottle

from api.models import ApiToken


class WriteRateThrottle(SimpleRateThrottle):
    scope = "write"

    def get_cache_key(self, request, view):
        if request.method in SAFE_METHODS or not request.user.is_authenticated:
            return None
        # Per token: a user's CI token and laptop token have separate budgets.
        ident = (
            f"token-{request.auth.pk}" if isinstance(request.auth, ApiToken) else f"user-{request.user.pk}"
        )
        return self.cache_format % {"scope": self.scope, "ident": ident}
