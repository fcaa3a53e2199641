"""JSON bodies are capped before they are read or parsed (API_MAX_BODY_BYTES)."""

from __future__ import annotations

import io

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


class LimitedJSONParser(JSONParser):
    """JSONParser that refuses a body larger than API_MAX_BODY_BYTES, from its Content-Length when
    given and by reading at most one byte more than the limit otherwise."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = f"the request body is larger than {limit:,} bytes, the most the API accepts"
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(too_large)
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise BodyTooLarge(too_large)
        return super().parse(io.BytesIO(data), media_type, parser_context)
