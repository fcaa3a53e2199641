"""What the operators' tests share: an API client holding a token, and the tokens found in a text."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

API = "/api/v1"
TOKEN = re.compile(r"cwt_[A-Za-z0-9_-]{40,}")


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture(autouse=True)
def fresh_throttle_counts(redis_servers, quota_redis):
    """The API's write throttle counts in the broker's Redis and its pages read the quota Redis:
    each test starts from zero."""
    cache.clear()
    yield
    cache.clear()
