"""The routers' change feed over HTTP (`GET /routers/v1/changes?after=`): routers only, each
changed name once with its candidates (chain and key, validity window) in serving order, and a
cursor that picks up exactly where the last answer stopped."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.utils import timezone

from api.routers import create_router_token
from api.tokens import create_token
from certificates.models import CertificateSource, ServedChange
from certificates.sealing import seal
from tests.factories import CertificateFactory, DomainFactory, UserFactory

# The feed is written at commit: these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)
URL = "/routers/v1/changes"


def _last() -> int:
    return ServedChange.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def router() -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {create_router_token('edge-1')}")


def test_a_router_gets_each_changed_name_with_its_candidates_keys_and_windows_then_nothing_more():
    now = timezone.now()
    domain = DomainFactory(name="www.example.com")
    before = _last()
    lets_encrypt = CertificateFactory(domain=domain, private_key=seal(b"-----BEGIN PRIVATE KEY-----\nle\n"))
    custom = CertificateFactory(
        domain=domain,
        source=CertificateSource.CUSTOM,
        not_after=now + datetime.timedelta(hours=1),
        private_key=seal(b"-----BEGIN PRIVATE KEY-----\ncustom\n"),
    )
    client = router()

    answer = client.get(URL, {"after": before})

    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["cursor"] == _last()
    [change] = body["changes"]
    assert change["name"] == "www.example.com" and change["seq"] == body["cursor"]
    assert [c["fingerprint"] for c in change["candidates"]] == [
        custom.fingerprint_sha256,
        lets_encrypt.fingerprint_sha256,
    ]
    first = change["candidates"][0]
    assert first["source"] == "custom" and first["not_after"] == custom.not_after.isoformat()
    assert first["pem"].startswith(custom.fullchain_pem.strip()) and "custom" in first["pem"]
    assert client.get(URL, {"after": body["cursor"]}).json() == {"cursor": body["cursor"], "changes": []}


def test_pages_of_a_small_limit_chain_by_their_cursors():
    before = _last()
    names = [DomainFactory(name=f"p{i}.example.com").name for i in range(5)]
    for name in names:
        CertificateFactory(domain=DomainFactory._meta.model.objects.get(name=name))
    client, cursor, seen = router(), before, []
    while changes := (answer := client.get(URL, {"after": cursor, "limit": 2}).json())["changes"]:
        seen += [change["name"] for change in changes]
        cursor = answer["cursor"]
    assert seen == names


@pytest.mark.parametrize(
    ("query", "phrase"),
    [
        ({"after": "x"}, "whole numbers"),
        ({"after": -1}, "0 or more"),
        ({"limit": 5000}, "between 1 and 1000"),
    ],
)
def test_a_bad_cursor_or_page_size_is_a_400_naming_it(query, phrase):
    answer = router().get(URL, query)
    assert answer.status_code == 400 and phrase in answer.content.decode()


def test_only_routers_tokens_read_the_feed():
    assert Client().get(URL).status_code == 401
    _, customer = create_token(UserFactory(), "cli")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {customer}").get(URL).status_code == 403
