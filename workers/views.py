"""Operational endpoints."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from workers.health import run_checks


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every critical dependency is up and beat ticked recently, 503 otherwise."""
    healthy, checks = run_checks()
    body = {"status": "ok" if healthy else "unhealthy", "checks": {c.name: c.as_dict() for c in checks}}
    return JsonResponse(body, status=200 if healthy else 503)
