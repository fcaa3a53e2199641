"""POST .../domains/<name>/revoke-and-replace and the revoked certificates a domain shows: what is
ordered (a renewal with a fresh key that revokes, no ARI `replaces`, the quota of a renewal), and
the cases refused with a 409 that orders and spends nothing. The CA and the workers are not needed
here (tests/integration/test_revocation.py runs the whole flow against Pebble)."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.utils import timezone

from certificates.models import ACTIVE_ORDER_STATES, CertificateSource, Order, OrderState
from domains import quota_policy
from domains.models import DomainEvent, DomainStatus
from domains.pauses import pause_domains
from domains.revocations import RevokeAndReplaceRefused, revoke_and_replace
from tests.api.conftest import API
from tests.factories import AcmeAccountFactory, AppFactory, CertificateFactory, DomainFactory

NAME = "www.example.com"
URL = f"{API}/apps/shop/domains/{NAME}/revoke-and-replace"
DAY = datetime.timedelta(days=1)

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(db):
    return AcmeAccountFactory(
        directory_url=settings.ACME_DIRECTORY_URL, account_url="https://ca.example.net/acct/1"
    )


@pytest.fixture
def served(shop, account):
    """www.example.com in use with a Let's Encrypt certificate."""
    domain = DomainFactory(app=shop, name=NAME, status=DomainStatus.IN_USE)
    cert = CertificateFactory(
        domain=domain, account=account, not_before=timezone.now() - DAY, renew_at=timezone.now() + 50 * DAY
    )
    return domain, cert


def _exact_set_tokens_left(name: str) -> int:
    buckets = quota_policy.buckets_for([name], 0, renewal=True, overrides={})
    return quota_policy.get_quota().peek_many(buckets)[0].tokens_left


def test_revoke_and_replace_orders_a_renewal_with_a_fresh_key_that_revokes_and_names_no_replaces(
    alice_api, served
):
    domain, cert = served
    tokens_before = _exact_set_tokens_left(NAME)

    response = alice_api.post(URL)

    assert response.status_code == 202, response.content
    assert cert.serial in response.json()["detail"]
    order = Order.objects.get(domain=domain)
    assert order.state == OrderState.PENDING
    assert (order.renews_id, order.is_renewal, order.revoke_replaced, order.replaces) == (
        cert.pk,
        True,
        "keyCompromise",
        "",
    )
    assert order.private_key is not None and order.quota_reservation is not None
    # A renewal of the same names spends from the exact-set bucket, as the renewal sweep's do.
    assert _exact_set_tokens_left(NAME) == tokens_before - 1
    cert.refresh_from_db()
    # Left to this order by the renewal sweep for the order's whole time budget.
    assert cert.renew_at > timezone.now() + datetime.timedelta(seconds=settings.ACME_ORDER_TIMEOUT_SECONDS)
    assert cert.revoked_at is None
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE
    assert DomainEvent.objects.filter(domain=domain, reason__contains="revoke and replace").count() == 1


def test_a_second_request_while_the_first_order_runs_is_a_409_that_orders_nothing(alice_api, served):
    domain, _ = served
    assert alice_api.post(URL).status_code == 202
    tokens = _exact_set_tokens_left(NAME)

    response = alice_api.post(URL)

    assert response.status_code == 409
    assert "already in flight" in response.json()["detail"]
    assert Order.objects.filter(domain=domain, state__in=ACTIVE_ORDER_STATES).count() == 1
    assert _exact_set_tokens_left(NAME) == tokens


def test_with_lets_encrypt_off_it_is_a_409_saying_so(alice_api, served):
    domain, _ = served
    domain.letsencrypt_enabled = False
    domain.status = DomainStatus.DISABLED
    domain.save()
    response = alice_api.post(URL)
    assert response.status_code == 409
    assert "Let's Encrypt is turned off" in response.json()["detail"]
    assert not Order.objects.filter(domain=domain).exists()


@pytest.mark.parametrize(
    "certificate",
    [None, "custom", "expired", "revoked"],
    ids=["none", "only-custom", "only-expired", "only-revoked"],
)
def test_without_a_valid_unrevoked_lets_encrypt_certificate_it_is_a_409(
    alice_api, shop, account, certificate
):
    domain = DomainFactory(app=shop, name=NAME, status=DomainStatus.PENDING_DNS)
    now = timezone.now()
    if certificate == "custom":
        CertificateFactory(domain=domain, source=CertificateSource.CUSTOM, not_before=now - DAY)
    elif certificate == "expired":
        CertificateFactory(domain=domain, not_before=now - 100 * DAY, not_after=now - DAY)
    elif certificate == "revoked":
        CertificateFactory(
            domain=domain, not_before=now - DAY, revoked_at=now, revocation_reason="keyCompromise"
        )
    response = alice_api.post(URL)
    assert response.status_code == 409
    assert response.json()["detail"] == f"{NAME} has no valid Let's Encrypt certificate to revoke and replace"
    assert not Order.objects.filter(domain=domain).exists()


def test_with_no_quota_token_now_it_is_a_409_naming_the_limit_and_spends_nothing(alice_api, served, settings):
    domain, _ = served
    settings.QUOTA_EXACT_SET_LIMIT = 1
    # The one token of the exact set's bucket is gone (another certificate for the same names).
    reservation = quota_policy.reserve(
        [quota_policy.Candidate(domain.pk, NAME, None, renewal=True)], 1, timezone.now()
    )[domain.pk]
    assert isinstance(reservation, quota_policy.Granted)

    response = alice_api.post(URL)

    assert response.status_code == 409
    assert "nothing was ordered" in response.json()["detail"]
    assert "certificate limit for exactly www.example.com reached" in response.json()["detail"]
    assert not Order.objects.filter(domain=domain).exists()
    # The token it booked went back: the next waiter gets the bucket's next token, one period on,
    # not the one after it.
    assert _exact_set_tokens_left(NAME) == 0
    waiting = quota_policy.reserve(
        [quota_policy.Candidate(domain.pk, NAME, None, renewal=True)], 1, timezone.now()
    )[domain.pk]
    period = datetime.timedelta(seconds=settings.QUOTA_EXACT_SET_PERIOD_SECONDS)
    assert waiting.until < timezone.now() + period * 1.5


def test_someone_elses_domain_is_a_404_and_staff_may_do_it(client_for, bob, staff, served):
    domain, _ = served
    assert client_for(bob).post(URL).status_code == 404
    assert not Order.objects.filter(domain=domain).exists()
    assert client_for(staff).post(URL).status_code == 202


def test_a_domain_shows_its_revoked_certificates_with_time_and_reason(alice_api, served):
    domain, cert = served
    at = timezone.now().replace(microsecond=0)
    old = CertificateFactory(
        domain=domain,
        not_before=timezone.now() - 10 * DAY,
        not_after=timezone.now() + 80 * DAY,
        revoked_at=at,
        revocation_reason="keyCompromise",
    )
    shown = alice_api.get(f"{API}/apps/shop/domains/{NAME}").json()
    assert shown["certificate"]["fingerprint_sha256"] == cert.fingerprint_sha256
    assert shown["revoked_certificates"] == [
        {
            "serial": old.serial,
            "fingerprint_sha256": old.fingerprint_sha256,
            "not_after": old.not_after.isoformat().replace("+00:00", "Z"),
            "revoked_at": at.isoformat().replace("+00:00", "Z"),
            "reason": "keyCompromise",
        }
    ]
    listed = alice_api.get(f"{API}/apps/shop/domains").json()["results"]
    assert [d["revoked_certificates"][0]["serial"] for d in listed] == [old.serial]


def test_the_service_refuses_a_paused_name(served):
    domain, _ = served
    domain.ca_paused_at = timezone.now()
    domain.save()
    with pytest.raises(RevokeAndReplaceRefused, match="paused"):
        revoke_and_replace(domain)


def test_a_paused_names_409_says_as_retry_does_that_only_the_operators_can_lift_the_pause(alice_api, served):
    # One fact, one wording (STYLE.md rule 15): the customer cannot unpause the name, and is told
    # who can, as "retry now" tells them; nothing is ordered or spent.
    domain, _ = served
    pause_domains([domain.pk], "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=secret")
    tokens_before = _exact_set_tokens_left(NAME)

    response = alice_api.post(URL)
    retried = alice_api.post(f"{API}/apps/shop/domains/{NAME}/retry")

    assert (response.status_code, retried.status_code) == (409, 409)
    detail = response.json()["detail"]
    assert detail.startswith(f"{NAME}: Let's Encrypt has paused certificate requests for this name; ")
    assert "only the platform's operators can lift the pause" in detail
    assert "secret" not in detail
    assert not Order.objects.filter(domain=domain).exists()
    assert _exact_set_tokens_left(NAME) == tokens_before


def test_other_apps_domains_are_untouched(alice_api, served, region, alice):
    other = DomainFactory(app=AppFactory(owner=alice, region=region, name="blog"), name="blog.example.com")
    CertificateFactory(domain=other, not_before=timezone.now() - DAY)
    assert alice_api.post(URL).status_code == 202
    assert not Order.objects.filter(domain=other).exists()


# --- the admin ------------------------------------------------------------------------------------


def _admin_action(admin_client, *domains):
    from django.urls import reverse

    response = admin_client.post(
        reverse("admin:domains_domain_changelist"),
        {"action": "revoke_and_replace_action", "_selected_action": [d.pk for d in domains]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def test_the_admin_action_starts_revoke_and_replace_and_says_why_another_domain_is_refused(
    admin_client, served, shop
):
    domain, cert = served
    pending = DomainFactory(app=shop, name="new.example.com", status=DomainStatus.PENDING_DNS)

    messages = _admin_action(admin_client, domain, pending)

    assert messages == [
        "Not revoked: new.example.com has no valid Let's Encrypt certificate to revoke and replace",
        f"{NAME}: ordering a new key and certificate; the certificate with serial {cert.serial} is "
        "revoked (keyCompromise) as soon as the new one is served",
    ]
    assert Order.objects.get(domain=domain).revoke_replaced == "keyCompromise"
    assert not Order.objects.filter(domain=pending).exists()


def test_the_admin_shows_a_domains_revoked_certificates_and_the_certificate_list_their_reason(
    admin_client, served
):
    from django.urls import reverse

    domain, _ = served
    old = CertificateFactory(
        domain=domain,
        not_before=timezone.now() - 10 * DAY,
        revoked_at=datetime.datetime(2026, 3, 19, 12, 0, tzinfo=datetime.UTC),
        revocation_reason="keyCompromise",
    )
    page = admin_client.get(reverse("admin:domains_domain_change", args=[domain.pk])).content.decode()
    assert f"serial {old.serial}: revoked 2026-03-19 12:00 UTC (keyCompromise)" in page
    listing = admin_client.get(
        reverse("admin:certificates_certificate_changelist"), {"revocation_reason": "keyCompromise"}
    ).content.decode()
    assert old.fingerprint_sha256 in listing and "keyCompromise" in listing


def test_with_no_account_row_yet_the_order_gets_an_unregistered_one_and_the_ca_is_not_asked(alice_api, shop):
    # A web request never registers the account (the CA may be slow or down): the order's first
    # step does, so the row stays unregistered here.
    domain = DomainFactory(app=shop, name=NAME, status=DomainStatus.IN_USE)
    CertificateFactory(domain=domain, not_before=timezone.now() - DAY)
    assert alice_api.post(URL).status_code == 202
    order = Order.objects.select_related("account").get(domain=domain)
    assert order.account.directory_url == settings.ACME_DIRECTORY_URL
    assert order.account.account_url == ""
