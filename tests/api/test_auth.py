"""Bearer tokens: who gets in, what is stored, and the ways tokens are made and revoked."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from api.models import ApiToken
from api.tokens import create_token, revoke_token
from tests.api.conftest import API

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"cwt_[A-Za-z0-9_-]{40,}")
INVALID = {"detail": "invalid or revoked API token"}


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def every_stored_value() -> str:
    """Every row of every table of the test database, as text."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 (table names)
            rows += [repr(row) for row in cursor.fetchall()]
    return "\n".join(rows)


def test_a_request_without_credentials_is_401_with_www_authenticate(quota_redis):
    response = APIClient().get(f"{API}/apps")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "token",
    ["cwt_" + "A" * 43, "not-a-certwright-token", "cwt_short"],
    ids=["well-formed-unknown", "foreign", "too-short"],
)
def test_an_unknown_token_is_401_invalid_or_revoked(quota_redis, token):
    response = bearer(token).get(f"{API}/apps")

    assert response.status_code == 401
    assert response.json() == INVALID


def test_a_token_differing_only_after_its_lookup_prefix_is_refused(client_for, alice):
    client = client_for(alice)
    forged = client.token[:-4] + ("AAAA" if not client.token.endswith("AAAA") else "BBBB")

    response = bearer(forged).get(f"{API}/apps")

    assert response.status_code == 401
    assert response.json() == INVALID


def test_a_revoked_token_is_401_at_once(client_for, alice):
    client = client_for(alice)
    assert client.get(f"{API}/apps").status_code == 200

    assert revoke_token(ApiToken.objects.get(user=alice)) is True
    response = client.get(f"{API}/apps")

    assert response.status_code == 401
    assert response.json() == INVALID


def test_the_token_of_a_deactivated_user_is_refused(client_for, alice):
    client = client_for(alice)
    alice.is_active = False
    alice.save()

    assert client.get(f"{API}/apps").status_code == 401


def test_a_valid_token_authenticates_as_its_user_and_records_its_use(client_for, alice, shop):
    client = client_for(alice)
    assert ApiToken.objects.get(user=alice).last_used is None

    response = client.get(f"{API}/apps")

    assert response.status_code == 200
    assert [app["owner"] for app in response.json()["results"]] == ["alice"]
    assert ApiToken.objects.get(user=alice).last_used is not None


def test_the_database_holds_only_the_tokens_sha256_never_the_token(alice):
    row, token = create_token(alice, "laptop CLI")

    row.refresh_from_db()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(row.prefix)
    assert token not in every_stored_value()


def test_manage_py_api_token_create_prints_the_token_once_and_it_works(alice, quota_redis):
    out = io.StringIO()

    call_command("api_token", "create", "alice", "--name", "CI deploys", stdout=out)

    printed = TOKEN.findall(out.getvalue())
    assert len(printed) == 1
    assert bearer(printed[0]).get(f"{API}/apps").status_code == 200
    assert ApiToken.objects.get(user=alice).name == "CI deploys"
    assert printed[0] not in every_stored_value()


def test_manage_py_api_token_list_shows_prefixes_never_tokens(alice, bob):
    row, token = create_token(alice, "laptop CLI")
    _, other = create_token(bob, "CI deploys")
    out = io.StringIO()

    call_command("api_token", "list", stdout=out)

    listing = out.getvalue()
    assert row.prefix in listing
    assert "laptop CLI" in listing and "CI deploys" in listing
    assert token not in listing and other not in listing
    assert not TOKEN.search(listing)


def test_manage_py_api_token_revoke_stops_the_token_working(alice, quota_redis):
    row, token = create_token(alice, "laptop CLI")
    assert bearer(token).get(f"{API}/apps").status_code == 200

    call_command("api_token", "revoke", row.prefix, stdout=io.StringIO())

    assert bearer(token).get(f"{API}/apps").status_code == 401
    assert ApiToken.objects.get(pk=row.pk).revoked is not None


def test_the_admin_shows_a_new_token_once_in_its_message_and_never_again(admin_client, alice, quota_redis):
    response = admin_client.post(
        "/admin/api/apitoken/add/", {"user": alice.pk, "name": "CI deploys"}, follow=True
    )

    assert response.status_code == 200
    shown = TOKEN.findall(response.content.decode())
    assert len(set(shown)) == 1
    token = shown[0]
    row = ApiToken.objects.get(user=alice)
    assert row.name == "CI deploys"
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert bearer(token).get(f"{API}/apps").status_code == 200

    change = admin_client.get(f"/admin/api/apitoken/{row.pk}/change/")
    listing = admin_client.get("/admin/api/apitoken/")
    assert change.status_code == 200
    assert row.prefix in change.content.decode()
    assert token not in change.content.decode()
    assert token not in listing.content.decode()
    assert token not in every_stored_value()
