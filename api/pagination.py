"""Cursor pagination: stable pages however the set changes, and no COUNT(*) per page."""

from rest_framework.pagination import CursorPagination


class ByName(CursorPagination):
    ordering = "name"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class NewestFirst(CursorPagination):
    ordering = ("-created", "-pk")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
