"""The `certwright notifications` commands as a customer runs them against the real API under
gunicorn: the defaults shown, a choice saved and shown back, and a bad one refused before or by the
API with the reason and a non-zero exit."""

from __future__ import annotations

import json

import pytest

from domains.notification_models import NotificationSettings

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_notifications_show_the_defaults_then_what_was_chosen(cli, app):
    app.owner.email = "owner@customer.example"
    app.owner.save()

    shown = cli.ok("notifications")
    assert "Mail to:     owner@customer.example" in shown
    assert "domain.action_required" in shown and "(the platform's default)" in shown

    saved = cli.ok("notifications-set", "--digest", "1d", "--events", "domain.failing,certificate.expiring")
    assert "Saved." in saved and "at most one mail every 1 day" in saved
    body = json.loads(cli.ok("notifications", "--json"))
    assert (body["events"], body["digest_seconds"]) == (["domain.failing", "certificate.expiring"], 86400)

    cli.ok("notifications-set", "--off")
    assert "Mails:       off" in cli.ok("notifications")
    assert NotificationSettings.objects.get(user=app.owner).email_enabled is False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--digest", "soon"], "--digest takes 0"),
        (["--digest", "8d"], "at most a week"),
        (["--events", "domain.exploded"], "unknown event type 'domain.exploded'"),
        (["--all-apps", "on"], "Only staff users"),
        ([], "nothing to change"),
    ],
)
def test_a_bad_choice_exits_non_zero_naming_what_is_wrong(cli, args, words):
    result = cli("notifications-set", *args)

    assert result.returncode != 0
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not NotificationSettings.objects.filter(all_apps=True).exists()
