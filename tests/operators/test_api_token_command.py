"""`manage.py api_token create` and `router_token create` refuse what they cannot do in words that
say what to do instead, with nothing half-made."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from api.models import ApiToken
from api.routers import ROUTERS_USERNAME
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_for_a_missing_user_says_how_to_create_the_customer():
    with pytest.raises(CommandError) as refused:
        call_command("api_token", "create", "alice", stdout=io.StringIO())

    assert str(refused.value) == (
        "no user named alice: a new customer and its first token come from "
        "`manage.py customer create alice [--email E]`"
    )


def test_a_token_name_too_long_to_store_is_refused_in_words_not_a_database_error():
    UserFactory(username="alice")

    with pytest.raises(CommandError) as refused:
        call_command("api_token", "create", "alice", "--name", "x" * 101, stdout=io.StringIO())

    assert str(refused.value) == "a token name has at most 100 characters (this one has 101)"
    assert not ApiToken.objects.exists()


def test_a_router_token_name_too_long_is_refused_before_the_routers_account_is_made():
    with pytest.raises(CommandError) as refused:
        call_command("router_token", "create", "--name", "x" * 101, stdout=io.StringIO())

    assert str(refused.value) == "a token name has at most 100 characters (this one has 101)"
    assert not get_user_model().objects.filter(username=ROUTERS_USERNAME).exists()
