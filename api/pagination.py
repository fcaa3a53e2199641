"""Cursor pagination: stable pages however the set changes, and no COUNT(*) per page."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class _Cursor(CursorPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        # A cursor the client mangled is a bad request (400 on the field), not a missing page.
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {"cursor": ["not a cursor this API gave out; start again without it"]}
            ) from None


class ByName(_Cursor):
    ordering = "name"


class NewestFirst(_Cursor):
    ordering = ("-created", "-pk")


class NewestEventFirst(_Cursor):
    """Webhook deliveries, by their event's seq."""

    ordering = ("-seq", "-pk")


class ById(_Cursor):
    ordering = "pk"
