"""Operational endpoints."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from api import metrics as metrics_module
from api.health import run_checks


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every critical dependency is up and beat ticked recently, 503 otherwise."""
    healthy, checks = run_checks()
    body = {"status": "ok" if healthy else "unhealthy", "checks": {c.name: c.as_dict() for c in checks}}
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format (OpenMetrics when the scraper asks for it); with METRICS_TOKEN set,
    only for `Authorization: Bearer <it>`."""
    if settings.METRICS_TOKEN:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.METRICS_TOKEN):
            response = HttpResponse("Send METRICS_TOKEN as Authorization: Bearer.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            response["Content-Type"] = "text/plain; charset=utf-8"
            return response
    body, content_type = metrics_module.exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
