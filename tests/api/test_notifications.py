"""The notifications API (api/notification_views.py): a user's email choices with the defaults
filled in, changed in part, refused with the field and the reason and nothing saved."""

from __future__ import annotations

import pytest

from domains.notification_models import DEFAULT_EMAIL_EVENTS, NotificationSettings
from tests.api.conftest import API

URL = f"{API}/notifications"

pytestmark = pytest.mark.django_db


def test_a_user_who_chose_nothing_sees_the_defaults(alice_api, alice, settings):
    alice.email = "alice@customer.example"
    alice.save()

    body = alice_api.get(URL).json()

    assert body["email"] == "alice@customer.example"
    assert body["email_enabled"] is True
    assert body["events"] == list(DEFAULT_EMAIL_EVENTS)
    assert body["digest_seconds"] is None
    assert body["digest_effective_seconds"] == settings.NOTIFICATION_DIGEST_SECONDS
    assert (body["waiting"], body["last_mailed_at"], body["all_apps"]) == (0, None, False)
    assert not NotificationSettings.objects.exists()


def test_a_change_keeps_what_it_does_not_name(alice_api, alice):
    changed = alice_api.patch(URL, {"events": ["certificate.expiring", "domain.in_use"]}, format="json")
    assert changed.status_code == 200, changed.content
    again = alice_api.patch(URL, {"digest_seconds": 86400}, format="json").json()

    # In the catalogue's order, whatever order they were given in.
    assert again["events"] == ["domain.in_use", "certificate.expiring"]
    assert (again["digest_seconds"], again["digest_effective_seconds"]) == (86400, 86400)
    off = alice_api.patch(URL, {"email_enabled": False, "digest_seconds": None}, format="json").json()
    assert off["email_enabled"] is False and off["digest_seconds"] is None
    assert off["events"] == ["domain.in_use", "certificate.expiring"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"events": ["domain.exploded"]}, "events", "domain.exploded"),
        ({"events": "domain.failing"}, "events", "list"),
        ({"digest_seconds": 8 * 86400}, "digest_seconds", "604800"),
        ({"digest_seconds": -1}, "digest_seconds", "0"),
        ({"digest_seconds": "soon"}, "digest_seconds", "integer"),
        ({"email_enabled": "perhaps"}, "email_enabled", "boolean"),
        ({"all_apps": True}, "all_apps", "Only staff users"),
        ({"email_enabled": False, "colour": "red"}, "colour", "Unknown field"),
    ],
)
def test_a_bad_choice_is_a_400_naming_the_field_and_nothing_is_saved(alice_api, body, field, words):
    refused = alice_api.patch(URL, body, format="json")

    assert refused.status_code == 400, refused.content
    assert words in " ".join(refused.json()[field])
    assert alice_api.get(URL).json()["email_enabled"] is True
    assert not NotificationSettings.objects.filter(email_enabled=False).exists()


def test_staff_can_hear_of_every_app(client_for, staff):
    staff_api = client_for(staff)

    body = staff_api.patch(URL, {"all_apps": True}, format="json").json()

    assert body["all_apps"] is True


def test_a_request_without_a_token_is_a_401(client):
    assert client.get(URL).status_code == 401
