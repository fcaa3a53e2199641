"""JSON bodies: capped in size (API_MAX_BODY_BYTES) and in nesting depth before they are parsed."""

from __future__ import annotations

import re
from itertools import accumulate

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json

# Bodies of this API are one level deep; the JSON decoder recurses once per level, so a deep body
# would exhaust the stack (RecursionError) long before the size cap stops it.
MAX_JSON_DEPTH = 32
# A JSON string, or an unterminated one up to the end: always matches at a quote, so that scanning a
# hostile body stays linear (a string pattern that can fail would be retried at every later quote).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# What a client that put a binary file into the body is told to do instead.
PEM_HINT = (
    "certificates and keys go in as PEM text (./certwright domains-ssl converts DER, PKCS#7 and "
    "PKCS#12 files to PEM for you)"
)


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def too_large_message() -> str:
    """The 413 message: the cap, in bytes, and the setting that holds it."""
    return (
        f"the request body is larger than {settings.API_MAX_BODY_BYTES:,} bytes "
        "(API_MAX_BODY_BYTES), the most the API accepts"
    )


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (JSON), brackets inside strings not counted."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class LimitedJSONParser(JSONParser):
    """JSONParser that refuses a body larger than API_MAX_BODY_BYTES (the request middleware has
    refused most already, unread), one not in its charset, and one nested deeper than
    MAX_JSON_DEPTH, each as a 4xx naming the problem."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = settings.API_MAX_BODY_BYTES
        # Named `body`, so that error reports never show it (api/error_reports.py).
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise BodyTooLarge(too_large_message())
        encoding = get_encoding(parser_context)
        try:
            body_text = body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"JSON parse error - the body is not {encoding} text (byte {exc.start}); {PEM_HINT}"
            ) from None
        depth = nesting_depth(body_text)
        if depth > MAX_JSON_DEPTH:
            raise ParseError(
                f"JSON parse error - arrays and objects nest {depth:,} levels deep; "
                f"the API reads at most {MAX_JSON_DEPTH}"
            )
        try:
            return json.loads(body_text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
