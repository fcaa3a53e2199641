"""Which renewals name the certificate they replace (RFC 9773) and spend no quota, and which
profile every renewal asks for, settled by the renewal sweep without DNS or the CA: the pre-flight
is passed, the CA's directory is a stub, and the quota is the real Redis."""

from __future__ import annotations

import datetime

import pytest
from acme import messages
from django.utils import timezone

from certificates.models import Order
from domains import quota_policy
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers import acme_steps, renewals
from workers.preflight import Verdict

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)
CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.fixture
def account(stub_directory):
    return AcmeAccountFactory(directory_url=stub_directory.url, account_url="https://ca.invalid/acct/1")


@pytest.fixture(autouse=True)
def dns_allows_everything(monkeypatch, account):
    """The pre-flight's DNS and CAA say yes (tests/integration covers them for real)."""

    def passed(rows):
        return {row.pk: Verdict(True, "points at the platform", account=account) for row in rows}

    monkeypatch.setattr(renewals, "preflight", passed)


def _due(ordered_by, **fields):
    domain = DomainFactory(acme_profile=fields.pop("acme_profile", ""))
    now = timezone.now()
    defaults = {
        "not_before": now - 70 * DAY,
        "renew_at": now - DAY,
        "account": ordered_by,
        "ari_cert_id": CERT_ID,
        # The CA's window has opened: Let's Encrypt exempts the renewal from every limit.
        "ari_window_start": now - 2 * DAY,
        "ari_window_end": now + DAY,
    }
    return CertificateFactory(domain=domain, **{**defaults, **fields})


def _renew(cert) -> Order:
    ids, token = renewals.claim_due_renewals(timezone.now())
    assert cert.pk in ids
    counts = renewals.renew_claimed(ids, str(token))
    assert counts["ordered"] == 1, counts
    return Order.objects.get(renews=cert)


def test_a_renewal_at_a_ca_with_ari_names_the_certificate_it_replaces_and_spends_no_quota(
    account, quota_redis
):
    order = _renew(_due(account))

    assert order.replaces == CERT_ID
    assert order.quota_reservation is None
    assert quota_redis.keys("quota:*") == []


@pytest.mark.parametrize(
    "window_start", [timezone.now() + 5 * DAY, None], ids=["window-not-open-yet", "no-window-known"]
)
def test_a_renewal_before_its_ari_window_opened_names_what_it_replaces_and_spends_its_quota(
    account, quota_redis, window_start
):
    # Let's Encrypt exempts a `replaces` renewal only once the window has opened (as the test ACME
    # proxy does): an earlier one (retry now, the lifetime rule while ARI fails) counts at the CA.
    order = _renew(_due(account, ari_window_start=window_start, ari_window_end=None))

    assert order.replaces == CERT_ID
    assert order.quota_reservation is not None
    assert quota_redis.keys("quota:set:*")


def test_a_certificate_another_account_ordered_is_renewed_without_replaces_spending_its_quota(
    account, quota_redis
):
    order = _renew(_due(account, account=AcmeAccountFactory()))

    assert order.replaces == ""
    assert order.quota_reservation is not None
    assert quota_redis.keys("quota:set:*")


def test_a_certificate_without_an_ari_identifier_is_renewed_without_replaces(account, quota_redis):
    order = _renew(_due(account, ari_cert_id=""))

    assert (order.replaces, order.quota_reservation is not None) == ("", True)


def test_at_a_ca_without_ari_no_renewal_names_replaces(account, quota_redis, stub_directory):
    del stub_directory.document["renewalInfo"]

    order = _renew(_due(account))

    assert (order.replaces, order.quota_reservation is not None) == ("", True)


def test_a_renewal_waiting_for_its_booked_token_spends_it_without_replaces(account, quota_redis):
    # A renewal whose replaces the CA refused before waits with a booked token: it keeps its place.
    cert = _due(account)
    booked = "8f0c2a3e-0a51-4f57-9d57-2d6f1f0a7d11"
    type(cert).objects.filter(pk=cert.pk).update(renewal_reservation=booked)

    order = _renew(cert)

    assert order.replaces == ""
    assert str(order.quota_reservation) == booked


@pytest.mark.parametrize(
    ("chosen", "platform", "asked"),
    [("shortlived", "classic", "shortlived"), ("", "tlsserver", "tlsserver"), ("", "", "")],
)
def test_every_renewal_asks_for_the_domains_effective_profile(
    account, quota_redis, settings, chosen, platform, asked
):
    settings.ACME_PROFILE = platform

    order = _renew(_due(account, acme_profile=chosen, profile="classic"))

    assert order.profile == asked


def _exact_set_tokens(name: str, account_id: int) -> int:
    bucket = quota_policy.buckets_for([name], account_id, renewal=True, overrides={})[0]
    return quota_policy.get_quota().peek_many([bucket])[0].tokens_left


def test_an_early_renewal_the_ca_refuses_replaces_for_keeps_the_token_it_spent(account, quota_redis):
    # It spent its token when it was claimed (its window had not opened): going again without
    # `replaces` after alreadyReplaced must not spend a second one under another reservation.
    order = _renew(_due(account, ari_window_start=timezone.now() + 5 * DAY))
    spent = order.quota_reservation
    left = _exact_set_tokens(order.names[0], account.pk)

    acme_steps._order_without_replaces(
        order, messages.Error(typ=messages.ERROR_PREFIX + "alreadyReplaced", detail="already replaced")
    )

    order.refresh_from_db()
    assert (order.replaces, order.quota_reservation) == ("", spent)
    assert _exact_set_tokens(order.names[0], account.pk) == left
