"""The API's request bodies, capped at API_MAX_BODY_BYTES before anything reads them.

Django reads a whole body into memory (up to DATA_UPLOAD_MAX_MEMORY_SIZE) the first time anything
asks for it, and it drops a body without Content-Length: a chunked body reached the views empty.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse

from api.errors import is_api, json_error
from api.parsers import too_large_message

# Bytes asked of the server per read of a chunked body: at most this much past the cap is read.
READ_STEP = 65536


class RequestBodyLimitMiddleware:
    """Under /api/: a declared Content-Length over the cap is a 413 before a byte of the body is read;
    a chunked body is read up to one byte past the cap (413 beyond it, the rest never read) and
    handed on with its length, as if it had been declared."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api(request):
            refused = self.refuse_or_buffer(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def refuse_or_buffer(self, request: HttpRequest) -> HttpResponse | None:
        limit = settings.API_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit():
            return json_error(413, too_large_message()) if int(declared) > limit else None
        if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return None
        if not request.META.get("wsgi.input_terminated"):
            # The server hands the raw chunks over (gunicorn de-chunks and says so): reading them to
            # an end it cannot tell would hang.
            return json_error(411, "this server needs a Content-Length header for a request body")
        stream = request.META["wsgi.input"]
        body = bytearray()
        while len(body) <= limit:
            data = stream.read(min(READ_STEP, limit + 1 - len(body)))
            if not data:
                break
            body += data
        if len(body) > limit:
            return json_error(413, too_large_message())
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(bytes(body)), len(body))
        return None
