"""The HTTP-01 responder: `GET /.well-known/acme-challenge/<token>` for any Host header.

Custom domains are not in ALLOWED_HOSTS, so this runs as the first middleware, before anything
validates the host, and answers nothing but this path. In production the routers send that path
of every custom domain to the web processes.

The CA validates once, seconds after the challenge is answered: a PostgreSQL restart at that
moment would fail the validation, and the domain with it. So the responder waits for the database
up to RESPONDER_DATABASE_WAIT_SECONDS (a restart takes about a second) before it answers 503.
"""

from __future__ import annotations

import re
import time

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseNotFound

from certificates.models import ACTIVE_ORDER_STATES, Challenge, ChallengeKind

PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 8.3: the token is base64url, at least 128 bits of entropy.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# How long one challenge request waits for PostgreSQL to come back, asking every quarter second.
RESPONDER_DATABASE_WAIT_SECONDS = 3.0
_DATABASE_RETRY_INTERVAL = 0.25


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached for RESPONDER_DATABASE_WAIT_SECONDS."""


def key_authorization_for(token: str) -> str | None:
    """The key authorization to serve for `token`, if an order in flight owns it."""
    return (
        Challenge.objects.filter(
            token=token, kind=ChallengeKind.HTTP_01, order__state__in=ACTIVE_ORDER_STATES
        )
        .values_list("key_authorization", flat=True)
        .first()
    )


def key_authorization_waiting_for_database(token: str) -> str | None:
    """key_authorization_for(token), asked again while PostgreSQL cannot be reached (a fresh
    connection each time), for at most RESPONDER_DATABASE_WAIT_SECONDS; then DatabaseUnavailable."""
    deadline = time.monotonic() + RESPONDER_DATABASE_WAIT_SECONDS
    while True:
        try:
            return key_authorization_for(token)
        except (OperationalError, InterfaceError):
            connection.close()
            if time.monotonic() >= deadline:
                raise DatabaseUnavailable from None
            time.sleep(_DATABASE_RETRY_INTERVAL)


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
        try:
            answer = key_authorization_waiting_for_database(token) if TOKEN.fullmatch(token) else None
        except DatabaseUnavailable:
            response = HttpResponse("the database is unavailable\n", status=503, content_type="text/plain")
            response["Retry-After"] = "5"
            return response
        if answer is None:
            return HttpResponseNotFound("no such challenge\n", content_type="text/plain")
        return HttpResponse(answer, content_type="text/plain")
