"""No server-side request forgery, end to end: with the allowlist off, endpoints at 127.0.0.1,
[::1] and a name the test DNS resolves to 127.0.0.2 get no request (their receivers count none) and
each attempt says why; a receiver allowlisted on 127.0.0.3 that redirects to 127.0.0.1 is not
followed. Every request here goes to this machine's loopback."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.utils import timezone

from certificates.sealing import seal
from domains.models import DomainStatus
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
from domains.webhooks import WebhookRefused, create_endpoint, new_secret, validate_url
from tests.factories import DomainFactory
from tests.webhook_receiver import Answer, start_receiver
from workers import webhook_delivery

pytestmark = pytest.mark.django_db


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _endpoint(app, url: str) -> WebhookEndpoint:
    """An endpoint written as it could have been before its name pointed somewhere private (the
    creation check is bypassed: the send must refuse on its own)."""
    return WebhookEndpoint.objects.create(app=app, url=url, secret=seal(new_secret().encode()))


def _one_event(domain) -> None:
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_endpoint_at_a_loopback_address_gets_no_request(settings, host):
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    settings.WEBHOOK_ALLOWED_NETWORKS = ()
    receiver = start_receiver(host)
    try:
        domain = DomainFactory(status=DomainStatus.CREATING)
        endpoint = _endpoint(domain.app, receiver.url)
        _one_event(domain)

        webhook_delivery.deliver()

        assert receiver.requests == []
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert delivery.state == DeliveryState.PENDING and delivery.attempts == 1
        assert delivery.last_error.startswith(f"refused: {host} is not a public address (loopback)")
        (attempt,) = delivery.attempt_log.all()
        assert attempt.status_code is None and "loopback" in attempt.error
    finally:
        receiver.stop()


def test_a_name_resolving_to_a_loopback_address_gets_no_request(settings, challtestsrv):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()
    receiver = start_receiver("127.0.0.2")
    name = "hooks.ssrf-rebinding.example"
    challtestsrv.add_a(name, ["127.0.0.2"])
    try:
        domain = DomainFactory(status=DomainStatus.CREATING)
        # Its form is fine, and the name is resolved only at send time.
        endpoint, _ = create_endpoint(domain.app, f"http://{name}:{receiver.port}/hooks")
        _one_event(domain)

        webhook_delivery.deliver()

        assert receiver.requests == []
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert delivery.last_error.startswith(
            f"refused: {name} resolves to 127.0.0.2 is not a public address (loopback)"
        )
    finally:
        challtestsrv.clear_a(name)
        receiver.stop()


def test_a_name_with_one_private_address_among_public_ones_is_refused(settings, challtestsrv):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()
    name = "hooks.mixed.example"
    challtestsrv.add_a(name, ["93.184.215.14", "10.0.0.7"])
    try:
        domain = DomainFactory(status=DomainStatus.CREATING)
        endpoint, _ = create_endpoint(domain.app, f"https://{name}/hooks")
        _one_event(domain)

        webhook_delivery.deliver()

        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert "10.0.0.7 is not a public address (private)" in delivery.last_error
    finally:
        challtestsrv.clear_a(name)


def test_a_redirect_to_loopback_is_not_followed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.3/32"),)
    target = start_receiver("127.0.0.1")
    allowed = start_receiver("127.0.0.3")
    allowed.answer = Answer(status=302, location=target.url)
    try:
        domain = DomainFactory(status=DomainStatus.CREATING)
        endpoint, _ = create_endpoint(domain.app, allowed.url)
        _one_event(domain)

        webhook_delivery.deliver()

        assert len(allowed.requests) == 1 and target.requests == []
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert delivery.state == DeliveryState.PENDING and delivery.last_status_code == 302
        assert delivery.last_error == "the endpoint answered HTTP 302"
        assert delivery.next_attempt_at > timezone.now()
    finally:
        target.stop()
        allowed.stop()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://0.0.0.0/hooks",
        "https://10.0.0.1/hooks",
    ],
)
def test_an_address_in_the_url_is_refused_at_creation(settings, url):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()

    with pytest.raises(WebhookRefused) as refused:
        validate_url(url)

    assert "is not a public address" in str(refused.value)
