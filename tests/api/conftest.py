"""Fixtures of the API tests: users with tokens, an app, and a trusted test PKI for uploads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from api.tokens import create_token
from tests.factories import AppFactory, RegionFactory, UserFactory
from tests.pki import key_pem

API = "/api/v1"


class TokenClient(APIClient):
    """An APIClient sending one user's bearer token; `token` is that token."""

    token: str


@pytest.fixture(autouse=True)
def fresh_throttle_counts(redis_servers):
    """The write throttle counts in Django's cache (the broker's Redis): each test starts at zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client_for(db, quota_redis) -> Callable[..., TokenClient]:
    """Makes an API client with a fresh token of `user` (the presenter peeks at a fresh quota Redis)."""

    def make(user) -> TokenClient:
        _, token = create_token(user, "tests")
        client = TokenClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        client.token = token
        return client

    return make


@pytest.fixture
def region(db):
    return RegionFactory()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob-the-owner")


@pytest.fixture
def staff(db):
    return UserFactory(username="operator", is_staff=True)


@pytest.fixture
def alice_api(client_for, alice) -> TokenClient:
    return client_for(alice)


@pytest.fixture
def shop(alice, region):
    """Alice's app."""
    return AppFactory(owner=alice, region=region, name="shop")


@pytest.fixture
def upload(trusted) -> Callable[..., dict]:
    """The API fields of a fresh certificate for `names` and its key (PEM), maybe encrypted."""

    def make(*names: str, passphrase: str | None = None) -> dict:
        leaf, key = trusted.leaf(list(names))
        fields = {
            "tlscert": trusted.chain_pem(leaf).decode(),
            "tlskey": key_pem(key, passphrase=passphrase).decode(),
        }
        if passphrase is not None:
            fields["tlskey_passphrase"] = passphrase
        return fields

    return make
