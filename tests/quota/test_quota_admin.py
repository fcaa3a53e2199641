"""What operators see of the quota: the admin's registered-domain page and overrides, and
`manage.py quota`, read from the real quota Redis."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from certificates.models import QuotaKind, QuotaOverride
from domains import quota_policy
from tests.factories import DomainFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh(quota_redis, monkeypatch):
    monkeypatch.setattr(quota_policy, "_quota", None)
    yield
    quota_policy._quota = None


def _spend(name: str, count: int) -> None:
    bucket = quota_policy.registered_domain_bucket(quota_policy.registered_domain(name))
    for _ in range(count):
        assert quota_policy.get_quota().spend(uuid.uuid4().hex, [bucket]).granted


def test_the_admin_lists_each_registered_domain_with_tokens_left_and_the_next_token(admin_client):
    DomainFactory(name="www.shop.example")
    DomainFactory(name="api.shop.example")
    DomainFactory(name="calm.example")
    _spend("www.shop.example", 2)
    body = admin_client.get("/admin/certificates/registereddomain/").content.decode()
    shop = body[body.index("shop.example") :]
    assert "48 of 50" in shop[: shop.index("</tr>")]
    calm = body[body.index("calm.example") :]
    assert "50 of 50" in calm[: calm.index("</tr>")]
    assert "50 per week" in body


def test_a_domains_admin_page_shows_the_quota_of_its_registered_domain(admin_client):
    domain = DomainFactory(name="www.page.example")
    _spend("www.page.example", 1)
    body = admin_client.get(f"/admin/domains/domain/{domain.pk}/change/").content.decode()
    assert "49 of 50 per week left; next token at " in body


def test_an_override_is_edited_in_the_admin_and_stored_as_the_quota_looks_it_up(admin_client):
    response = admin_client.post(
        "/admin/certificates/quotaoverride/add/",
        {
            "kind": QuotaKind.EXACT_SET,
            "subject": "WWW.Example.com, example.com",
            "capacity": "10",
            "period_seconds": "604800",
            "reason": "granted by Let's Encrypt",
        },
    )
    assert response.status_code == 302
    assert QuotaOverride.objects.get().subject == "example.com,www.example.com"


def test_the_command_prints_tokens_left_and_the_next_token_of_named_registered_domains():
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="big.example", capacity=200, period_seconds=604800
    )
    _spend("a.big.example", 3)
    out = io.StringIO()
    call_command("quota", "www.big.example", "other.example", stdout=out)
    lines = {line.split()[0]: line for line in out.getvalue().splitlines()[1:]}
    big = lines["big.example"]
    assert "200 per week (override)" in big
    # 3 of 200 spent: the next token arrives within 50.4 minutes (one every 604800 s / 200).
    assert big.split()[-4] == "197" and big.endswith(" UTC")
    assert lines["other.example"].split()[-2:] == ["50", "-"]


def test_the_command_says_when_the_quota_store_is_unreachable(settings):
    settings.QUOTA_REDIS_URL = "redis://127.0.0.1:1/0"
    out, err = io.StringIO(), io.StringIO()
    call_command("quota", "example.com", stdout=out, stderr=err)
    assert "unknown" in out.getvalue()
    assert "unreachable" in err.getvalue()


def test_the_command_refuses_a_public_suffix():
    with pytest.raises(CommandError, match=r"co\.uk is a public suffix"):
        call_command("quota", "co.uk")
