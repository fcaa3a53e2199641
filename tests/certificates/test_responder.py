"""The HTTP-01 responder answers tokens of orders in flight, for any Host, and nothing else."""

import pytest

from certificates.models import Challenge, OrderState
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def _challenge(state: str = OrderState.VALIDATING) -> Challenge:
    order = OrderFactory(names=["www.example.com"], state=state)
    return Challenge.objects.create(
        order=order,
        identifier="www.example.com",
        authorization_url="https://ca.example/authz/1",
        challenge_url="https://ca.example/chall/1",
        token=TOKEN,
        key_authorization=f"{TOKEN}.thumbprint",
    )


def test_a_token_of_an_order_in_flight_is_answered_as_text_for_a_host_not_in_allowed_hosts(client):
    _challenge()
    response = client.get(f"/.well-known/acme-challenge/{TOKEN}", HTTP_HOST="www.customer-domain.com")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain"
    assert response.content.decode() == f"{TOKEN}.thumbprint"


@pytest.mark.parametrize("state", [OrderState.VALID, OrderState.INVALID, OrderState.CANCELLED])
def test_a_token_of_a_finished_order_is_404(client, state):
    _challenge(state)
    assert client.get(f"/.well-known/acme-challenge/{TOKEN}", HTTP_HOST="www.example.com").status_code == 404


def test_an_unknown_or_malformed_token_is_404(client):
    for token in ("x" * 43, "../../etc/passwd", ""):
        assert client.get(f"/.well-known/acme-challenge/{token}", HTTP_HOST="a.example").status_code == 404


def test_other_paths_on_an_unknown_host_are_still_refused_by_host_validation(client):
    assert client.get("/admin/login/", HTTP_HOST="www.customer-domain.com").status_code == 400


def test_post_to_the_challenge_path_is_not_allowed(client):
    _challenge()
    assert client.post(f"/.well-known/acme-challenge/{TOKEN}", HTTP_HOST="a.example").status_code == 405
