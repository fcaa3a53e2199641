"""Request bodies capped before anything reads them: the API's at API_MAX_BODY_BYTES, the pages'
(the admin, the Domains tab, the sign-in pages) at PAGE_MAX_BODY_BYTES.

Django reads a whole body into memory (up to DATA_UPLOAD_MAX_MEMORY_SIZE) the first time anything
asks for it, and it drops a body without Content-Length: a chunked body reached the views empty.
A form's files are streamed to temporary files past FILE_UPLOAD_MAX_MEMORY_SIZE with no limit at
all, and CsrfViewMiddleware reads a POST's form before any view runs, signed in or not: a page's
view cannot cap its own body.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

from api.errors import is_api, json_error
from api.parsers import too_large_message
from certificates.custom import MAX_UPLOAD_BYTES

# Bytes asked of the server per read of a chunked body: at most this much past the cap is read.
READ_STEP = 65536


def page_too_large() -> HttpResponse:
    limit = settings.PAGE_MAX_BODY_BYTES
    text = (
        f"The form sent is larger than {limit // 1024:,} KiB (PAGE_MAX_BODY_BYTES), the most a page "
        f"accepts. A custom certificate's files are at most {MAX_UPLOAD_BYTES // 1024} KiB each."
    )
    page = f"<!doctype html><title>Request too large</title><h1>Request too large</h1><p>{escape(text)}</p>"
    return HttpResponse(page, status=413, content_type="text/html; charset=utf-8")


class RequestBodyLimitMiddleware:
    """Under /api/: a declared Content-Length over the cap is a 413 before a byte of the body is read;
    a chunked body is read up to one byte past the cap (413 beyond it, the rest never read) and
    handed on with its length, as if it had been declared. Elsewhere (the pages): a declared
    Content-Length over PAGE_MAX_BODY_BYTES is a 413 page, the body never read; a body without one
    reaches Django, which reads none of it."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api(request):
            refused = self.refuse_or_buffer(request)
            if refused is not None:
                return refused
        else:
            declared = request.META.get("CONTENT_LENGTH") or ""
            if declared.isdigit() and int(declared) > settings.PAGE_MAX_BODY_BYTES:
                return page_too_large()
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
