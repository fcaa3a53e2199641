"""The HTTP-01 responder: `GET /.well-known/acme-challenge/<token>` for any Host header.

Custom domains are not in ALLOWED_HOSTS, so this runs as the first middleware, before anything
validates the host, and answers nothing but this path. In production the routers send that path
of every custom domain to the web processes.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseNotFound

from certificates.models import ACTIVE_ORDER_STATES, Challenge, ChallengeKind

PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 8.3: the token is base64url, at least 128 bits of entropy.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def key_authorization_for(token: str) -> str | None:
    """The key authorization to serve for `token`, if an order in flight owns it."""
    return (
        Challenge.objects.filter(
            token=token, kind=ChallengeKind.HTTP_01, order__state__in=ACTIVE_ORDER_STATES
        )
        .values_list("key_authorization", flat=True)
        .first()
    )


class Http01ResponderMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not path.startswith(PREFIX):
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        token = path[len(PREFIX) :]
        answer = key_authorization_for(token) if TOKEN.fullmatch(token) else None
        if answer is None:
            return HttpResponseNotFound("no such challenge\n", content_type="text/plain")
        return HttpResponse(answer, content_type="text/plain")
