"""The admin's way to the same things: a Customers page whose add form makes a customer and shows
their first token once, an action that issues another, and the API token add page's checks."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from api.admin import MAX_TOKENS_PER_ACTION
from api.models import ApiToken
from tests.factories import AppFactory, UserFactory
from tests.operators.conftest import API, TOKEN, bearer

pytestmark = pytest.mark.django_db

User = get_user_model()
ADD = reverse("admin:api_customer_add")
CUSTOMERS = reverse("admin:api_customer_changelist")


def add_customer(client, **fields: str):
    return client.post(ADD, {"username": "", "email": "", "token_name": "CLI", **fields}, follow=True)


def test_adding_a_customer_creates_a_user_who_is_not_staff_and_shows_its_token_once(admin_client):
    response = add_customer(admin_client, username="alice", email="alice@example.com", token_name="laptop")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Customer alice created, not staff and with no password." in page
    [token] = set(TOKEN.findall(page))
    customer = User.objects.get(username="alice")
    assert (customer.is_staff, customer.is_superuser, customer.has_usable_password()) == (False, False, False)
    row = ApiToken.objects.get(user=customer)
    assert (row.name, row.digest) == ("laptop", hashlib.sha256(token.encode()).hexdigest())
    assert bearer(token).get(f"{API}/apps").status_code == 200

    change = admin_client.get(reverse("admin:api_customer_change", args=[customer.pk])).content.decode()
    assert token not in change
    assert customer.password not in change
    assert token not in admin_client.get(CUSTOMERS).content.decode()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"username": "ALICE"},
            "a user named alice already exists: issue them another token with the action",
        ),
        ({"username": "routers"}, "the name routers is reserved for Certwright&#x27;s own account"),
        ({"username": "álvaro"}, "invalid customer name"),
        ({"username": "bob", "email": "not-an-address"}, "Enter a valid email address."),
        ({"username": "bob", "token_name": "tab\there"}, "a token name cannot hold control characters"),
    ],
    ids=["taken", "reserved", "not-ascii", "email", "token-name"],
)
def test_the_add_form_refuses_what_the_command_refuses_and_saves_nothing(admin_client, fields, error):
    UserFactory(username="alice")
    before = User.objects.count()

    response = add_customer(admin_client, **fields)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert User.objects.count() == before
    assert not ApiToken.objects.exists()


def test_the_customers_page_lists_customers_with_their_apps_but_not_staff_or_the_routers(admin_client):
    alice = UserFactory(username="alice")
    AppFactory(owner=alice, name="shop")
    UserFactory(username="operator", is_staff=True)
    UserFactory(username="routers")

    response = admin_client.get(CUSTOMERS)

    shown = [row.username for row in response.context["cl"].result_list]
    assert shown == ["alice"]
    assert response.context["cl"].result_list[0].app_count == 1


def test_the_action_issues_one_new_token_per_active_customer_and_shows_each_once(admin_client):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    gone = UserFactory(username="gone", is_active=False)

    response = admin_client.post(
        CUSTOMERS,
        {"action": "issue_token_action", "_selected_action": [alice.pk, bob.pk, gone.pk]},
        follow=True,
    )

    page = response.content.decode()
    tokens = set(TOKEN.findall(page))
    assert len(tokens) == 2
    assert "No token for gone: the customer is deactivated." in page
    for token in tokens:
        assert bearer(token).get(f"{API}/apps").status_code == 200
    assert sorted(ApiToken.objects.values_list("user__username", flat=True)) == ["alice", "bob"]


def test_the_action_refuses_more_customers_than_it_can_show_tokens_for(admin_client):
    chosen = [UserFactory().pk for _ in range(MAX_TOKENS_PER_ACTION + 1)]

    response = admin_client.post(
        CUSTOMERS, {"action": "issue_token_action", "_selected_action": chosen}, follow=True
    )

    assert f"Choose at most {MAX_TOKENS_PER_ACTION} customers" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_deactivating_a_customer_on_the_admin_stops_their_tokens_at_once(admin_client, quota_redis):
    alice = UserFactory(username="alice")
    token = TOKEN.findall(
        admin_client.post(
            CUSTOMERS, {"action": "issue_token_action", "_selected_action": [alice.pk]}, follow=True
        ).content.decode()
    )[0]

    admin_client.post(
        reverse("admin:api_customer_change", args=[alice.pk]), {"email": "", "is_active": ""}, follow=True
    )

    assert bearer(token).get(f"{API}/apps").status_code == 401


def test_the_api_token_add_page_refuses_a_name_with_control_characters(admin_client):
    alice = UserFactory(username="alice")

    response = admin_client.post(reverse("admin:api_apitoken_add"), {"user": alice.pk, "name": "a\x07b"})

    assert response.status_code == 200
    assert "a token name cannot hold control characters" in response.content.decode()
    assert not ApiToken.objects.exists()
