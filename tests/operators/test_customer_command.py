"""`manage.py customer`: one command gives an operator a customer (not staff, no password unless
asked) and the API token they start with; `customer list` shows who exists."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from api.models import ApiToken
from tests.factories import AppFactory, RegionFactory, UserFactory
from tests.operators.conftest import API, TOKEN, bearer

pytestmark = pytest.mark.django_db

User = get_user_model()


def create(*args: str) -> tuple[str, str]:
    """Runs `customer create ARGS`; returns its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command("customer", "create", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_prints_the_token_alone_on_stdout_and_says_what_it_made_on_stderr():
    out, err = create("alice", "--email", "Alice@Example.COM")

    [token] = out.splitlines()
    assert TOKEN.fullmatch(token)
    assert err.splitlines() == [
        "Created customer alice <Alice@example.com>: not staff, no password (their API token is how "
        "they sign in).",
        'Their API token "CLI" follows, shown this once (only its hash is kept):',
        "With it they create apps and add domains, through the API or the CLI, such as: "
        "CERTWRIGHT_API_TOKEN=<the token> certwright apps-create APP",
    ]
    assert token not in err


def test_the_new_customer_is_not_staff_has_no_usable_password_and_its_token_works_at_once():
    region = RegionFactory()
    out, _ = create("alice", "--token-name", "laptop CLI")

    customer = User.objects.get(username="alice")
    assert (customer.is_staff, customer.is_superuser, customer.is_active) == (False, False, True)
    assert not customer.has_usable_password()
    assert ApiToken.objects.get(user=customer).name == "laptop CLI"
    api = bearer(out.strip())
    assert api.get(f"{API}/apps").json()["results"] == []
    created = api.post(f"{API}/apps", {"name": "shop", "region": region.name}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["owner"] == "alice"
    # Not staff: someone else's app stays invisible.
    other = AppFactory(name="not-hers", region=region)
    assert api.get(f"{API}/apps/{other.name}").status_code == 404


@pytest.mark.parametrize("taken", ["alice", "ALICE"])
def test_a_customers_name_even_in_another_case_is_refused_saying_how_to_give_another_token(taken):
    create("alice")

    with pytest.raises(CommandError) as refused:
        create(taken)

    assert str(refused.value) == (
        "a user named alice already exists: `manage.py api_token create alice` gives them another token"
    )
    assert User.objects.count() == 1
    assert ApiToken.objects.count() == 1


def test_a_staff_users_name_is_refused_as_not_a_customer():
    UserFactory(username="operator", is_staff=True)

    with pytest.raises(CommandError, match=r"^a user named operator already exists \(a staff user"):
        create("operator")
    assert not ApiToken.objects.exists()


def test_the_routers_accounts_name_is_reserved():
    # A customer called `routers` would be given the key-fetching permission by `router_token create`.
    with pytest.raises(CommandError, match=r"^the name routers is reserved for Certwright's own account$"):
        create("routers")
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("two words", "invalid customer name 'two words': Enter a valid username."),
        ("", "invalid customer name '': This field cannot be blank."),
        ("x" * 151, "invalid customer name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…': Ensure this value"),
        ("álvaro", "invalid customer name 'álvaro': Enter a valid username."),
        ("nul\x00byte", "invalid customer name 'nul\\x00byte': Enter a valid username."),
    ],
    ids=["space", "empty", "too-long", "not-ascii", "nul"],
)
def test_a_bad_name_is_refused_naming_the_problem_and_nothing_is_saved(name, message):
    with pytest.raises(CommandError) as refused:
        create(name)

    assert str(refused.value).startswith(message)
    assert not User.objects.exists()
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--email", "not-an-address"), "invalid e-mail address 'not-an-address'"),
        (("--token-name", "x" * 101), "a token name has at most 100 characters (this one has 101)"),
        (("--token-name", "tab\there"), "a token name cannot hold control characters"),
    ],
    ids=["email", "long-token-name", "control-character"],
)
def test_a_bad_email_or_token_name_is_refused_and_nothing_is_saved(args, message):
    with pytest.raises(CommandError) as refused:
        create("alice", *args)

    assert str(refused.value) == message
    assert not User.objects.exists()


def test_a_password_is_set_when_asked_read_from_stdin_and_checked_by_the_validators(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("12345\n"))
    with pytest.raises(CommandError, match="This password is too short"):
        create("alice", "--password")
    assert not User.objects.exists()

    monkeypatch.setattr("sys.stdin", io.StringIO("a long passphrase nobody guesses\n"))
    _, err = create("alice", "--password")

    assert User.objects.get(username="alice").check_password("a long passphrase nobody guesses")
    assert err.startswith("Created customer alice: not staff, a password.\n")


def test_a_password_asked_with_nothing_on_stdin_is_refused(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match=r"^--password needs a password \(none was given\)$"):
        create("alice", "--password")
    assert not User.objects.exists()


def test_list_shows_customers_only_with_their_apps_and_active_tokens():
    create("bob", "--email", "bob@example.com")
    out, _ = create("alice")
    AppFactory(owner=User.objects.get(username="alice"), name="shop")
    ApiToken.objects.filter(user__username="bob").update(revoked="2025-01-01T00:00:00Z")
    UserFactory(username="operator", is_staff=True)
    UserFactory(username="routers")

    listing = io.StringIO()
    call_command("customer", "list", stdout=listing)

    lines = [line.split() for line in listing.getvalue().splitlines()]
    assert [line[:5] for line in lines] == [
        ["NAME", "EMAIL", "ACTIVE", "APPS", "TOKENS"],
        ["alice", "-", "yes", "1", "1"],
        ["bob", "bob@example.com", "yes", "0", "0"],
    ]
    assert out.strip() not in listing.getvalue()


def test_list_without_customers_says_how_to_make_one():
    listing = io.StringIO()
    call_command("customer", "list", stdout=listing)
    assert listing.getvalue() == "No customers yet: `manage.py customer create NAME` makes one.\n"
