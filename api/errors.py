"""Errors under /api/ answer JSON (`{"detail": ...}`) like the views do, never Django's HTML pages.

These are the project's handler400/403/404/500 (config/urls.py): they answer for what fails before
or outside a DRF view (an unknown path, an unreadable request, a crash); other paths keep Django's
pages. With DEBUG on, Django shows its technical pages instead (api/error_reports.py scrubs them).
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from api.parsers import too_large_message

API_PREFIX = "/api/"


def is_api(request: HttpRequest) -> bool:
    """Whether the request is the API's (and so is answered in JSON)."""
    return request.path_info.startswith(API_PREFIX)


def json_error(status: int, detail: str) -> JsonResponse:
    """An error answer of the API: `{"detail": ...}` with its status."""
    response = JsonResponse({"detail": detail}, status=status)
    # Answered before CommonMiddleware would add it: without it gunicorn would chunk the answer.
    response["Content-Length"] = str(len(response.content))
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 for a request Django could not accept (a bad Host header, an oversized body)."""
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return json_error(413, too_large_message())
    if isinstance(exception, DisallowedHost):
        return json_error(400, "the Host header names no host this server answers for")
    return json_error(400, "the request could not be read")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """403 raised outside a view (the views answer their own)."""
    if not is_api(request):
        return defaults.permission_denied(request, exception)
    return json_error(403, "permission denied")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for a path no route matches (a missing app or domain is the view's own 404)."""
    if not is_api(request):
        return defaults.page_not_found(request, exception)
    return json_error(404, f"no API endpoint at {request.path}; /api/schema/ lists them")


def server_error(request: HttpRequest) -> HttpResponse:
    """500: nothing about the failure is shown, it is in the log."""
    if not is_api(request):
        return defaults.server_error(request)
    return json_error(500, "internal error: the request failed on the server and was logged")
