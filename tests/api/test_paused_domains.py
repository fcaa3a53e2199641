"""A domain whose name the CA paused, as the customer sees it through the API: the status and a
message that the platform's operators must lift the pause, never the account's unpause URL."""

from __future__ import annotations

import pytest

from domains.models import DomainStatus
from domains.pauses import pause_domains
from tests.api.conftest import API
from tests.factories import DomainFactory

pytestmark = pytest.mark.django_db

WWW = f"{API}/apps/shop/domains/www.example.com"
URL = "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJhbGciOi.secret.part"


@pytest.fixture
def paused(shop):
    domain = DomainFactory(app=shop, name="www.example.com", status=DomainStatus.CREATING)
    pause_domains([domain.pk], URL)
    return domain


def test_a_paused_domain_shows_action_required_and_that_the_operators_must_lift_it(alice_api, paused):
    response = alice_api.get(WWW)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "action_required"
    assert body["next_attempt_at"] is None
    assert body["last_error"].startswith("Let's Encrypt has paused certificate requests for www.example.com")
    assert "the platform's operators lift the pause" in body["last_error"]
    assert body["dns"]["message"] == "not checked while Let's Encrypt has this name paused"
    assert "jwt" not in response.content.decode()
    assert "jwt" not in alice_api.get(f"{WWW}/events").content.decode()


def test_retry_of_a_paused_domain_is_refused_with_409_saying_only_the_operators_can_lift_it(
    alice_api, paused
):
    response = alice_api.post(f"{WWW}/retry")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "www.example.com: Let's Encrypt has paused certificate requests for this name; only the "
        "platform's operators can lift the pause (at Let's Encrypt, then with \"Mark unpaused at the CA\"), "
        "so a retry would be refused by the CA"
    }
