"""A name the CA paused: nothing is sent for it from any path until an operator unpauses it."""

from __future__ import annotations

import datetime

import pytest
from acme import messages
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from certificates.models import Certificate, Order, OrderState
from domains.claims import claim_check_now, renew_now
from domains.models import Domain, DomainEvent, DomainStatus
from domains.pauses import DomainPaused, pause_domains, paused_message, unpause_domains
from domains.services import retry_now
from tests.callbacks import task_sends
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers import domain_checks, order_run, renewals

pytestmark = pytest.mark.django_db

URL = "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJhbGciOi.secret.part"
# Boulder's wording (wfe2/wfe.go), a 429 rateLimited at newOrder.
PAUSE_DETAIL = (
    "Your account is temporarily prevented from requesting certificates for {names} and possibly "
    "others. Please visit: " + URL
)
DAY = datetime.timedelta(days=1)


def _paused(**fields) -> Domain:
    domain = DomainFactory(**fields)
    pause_domains([domain.pk], URL)
    domain.refresh_from_db()
    return domain


def test_a_paused_domain_requires_action_keeps_the_url_for_operators_and_has_nothing_due():
    now = timezone.now()
    domain = DomainFactory(status=DomainStatus.CREATING, next_attempt_at=now)
    cert = CertificateFactory(domain=domain, renew_at=now + DAY)
    assert pause_domains([domain.pk], URL, now) == [domain.pk]
    domain.refresh_from_db()
    cert.refresh_from_db()
    assert (domain.status, domain.ca_unpause_url, domain.ca_paused_at, domain.next_attempt_at) == (
        DomainStatus.ACTION_REQUIRED,
        URL,
        now,
        None,
    )
    assert domain.last_error == paused_message(domain.name)
    # The customer reads last_error and the history: neither holds the account's unpause token.
    assert "jwt" not in domain.last_error
    assert not DomainEvent.objects.filter(domain=domain, reason__contains="jwt").exists()
    # Still served, not renewed.
    assert cert.renew_at is None
    assert Certificate.objects.filter(pk=cert.pk).exists()
    # Paused again later: the first time is kept, and it is not newly paused.
    assert pause_domains([domain.pk], URL, now + DAY) == []
    assert Domain.objects.get(pk=domain.pk).ca_paused_at == now


def test_retry_now_and_every_single_claim_refuse_a_paused_domain():
    domain = _paused()
    CertificateFactory(domain=domain, renew_at=timezone.now())
    with pytest.raises(DomainPaused, match="only the platform's operators can lift the pause"):
        retry_now(domain)
    assert claim_check_now(domain.pk, reset_backoff=True) is None
    assert renew_now(domain.pk) is False


def test_a_check_of_a_paused_domain_however_claimed_orders_nothing_and_leaves_nothing_due():
    domain = _paused()
    # Claimed by a path that does not look at the pause (Let's Encrypt turned on again, say).
    Domain.objects.filter(pk=domain.pk).update(
        status=DomainStatus.PENDING_DNS, claim_token="00000000-0000-0000-0000-000000000001"
    )
    counts = domain_checks.check_claimed([domain.pk], "00000000-0000-0000-0000-000000000001")
    domain.refresh_from_db()
    assert counts["ordered"] == 0
    assert (domain.status, domain.next_attempt_at, domain.claim_token) == (
        DomainStatus.ACTION_REQUIRED,
        None,
        None,
    )
    assert domain.last_error == paused_message(domain.name)
    assert not Order.objects.exists()


def test_the_renewal_sweep_drops_a_paused_domains_renewal_whatever_scheduled_it():
    now = timezone.now()
    domain = _paused(status=DomainStatus.IN_USE)
    # An ARI window, say, scheduled it since.
    cert = CertificateFactory(domain=domain, renew_at=now - DAY)
    ids, token = renewals.claim_due_renewals(now)
    counts = renewals.renew_claimed(ids, str(token), now)
    cert.refresh_from_db()
    assert counts["ordered"] == 0 and counts["skipped"] == 1
    assert (cert.renew_at, cert.renewal_claim) == (None, None)
    assert not Order.objects.exists()


def test_unpausing_a_domain_without_a_certificate_checks_it_now_with_the_backoff_reset(
    django_capture_on_commit_callbacks,
):
    domain = _paused(consecutive_failures=7)
    with django_capture_on_commit_callbacks() as callbacks:
        assert unpause_domains([domain.pk]) == [domain.name]
    domain.refresh_from_db()
    assert (domain.ca_unpause_url, domain.ca_paused_at, domain.consecutive_failures, domain.last_error) == (
        "",
        None,
        0,
        "",
    )
    assert domain.status == DomainStatus.PENDING_DNS
    assert domain.claim_token is not None
    assert len(task_sends(callbacks)) == 1
    # Once only.
    assert unpause_domains([domain.pk]) == []


def test_unpausing_a_served_domain_renews_its_certificate_now(django_capture_on_commit_callbacks):
    now = timezone.now()
    domain = DomainFactory(status=DomainStatus.IN_USE)
    cert = CertificateFactory(domain=domain, renew_at=now + 30 * DAY, renewal_failures=3)
    pause_domains([domain.pk], URL, now)
    with django_capture_on_commit_callbacks() as callbacks:
        assert unpause_domains([domain.pk]) == [domain.name]
    domain.refresh_from_db()
    cert.refresh_from_db()
    assert (domain.status, domain.last_error, domain.ca_unpause_url) == (DomainStatus.IN_USE, "", "")
    assert cert.renewal_claim is not None and cert.renewal_failures == 0
    assert len(task_sends(callbacks)) == 1


def _pending_order(domain: Domain) -> tuple[Order, object]:
    held = "00000000-0000-0000-0000-0000000000aa"
    order = Order.objects.create(
        domain=domain,
        account=AcmeAccountFactory(),
        names=[domain.name],
        state=OrderState.PENDING,
        lease_token=held,
    )
    return order, held


def test_the_cas_pause_refusal_at_new_order_pauses_the_domain_and_every_other_domain_it_lists(monkeypatch):
    domain = DomainFactory(name="shop.example.com", status=DomainStatus.CREATING)
    other = DomainFactory(name="blog.example.com", status=DomainStatus.FAILING)
    bystander = DomainFactory(name="news.example.com", status=DomainStatus.FAILING)
    order, held = _pending_order(domain)
    problem = messages.Error.with_code(
        "rateLimited", detail=PAUSE_DETAIL.format(names="shop.example.com, blog.example.com")
    )

    def refuse(order, carried):
        raise problem

    monkeypatch.setitem(order_run.STEPS, OrderState.PENDING, refuse)
    assert order_run._run_one(order, held, order_run.Carried()) == (None, "paused by the CA")
    order.refresh_from_db()
    assert order.state == OrderState.INVALID
    for paused in (domain, other):
        paused.refresh_from_db()
        assert (paused.status, paused.ca_unpause_url) == (DomainStatus.ACTION_REQUIRED, URL)
    bystander.refresh_from_db()
    assert (bystander.status, bystander.ca_unpause_url) == (DomainStatus.FAILING, "")


def test_the_admin_lists_paused_domains_shows_the_url_and_marks_them_unpaused(admin_client):
    paused = _paused(name="paused.example.com")
    DomainFactory(name="fine.example.com")
    changelist = reverse("admin:domains_domain_changelist")
    listed = admin_client.get(changelist, {"ca_paused": "yes"}).content.decode()
    assert "paused.example.com" in listed and "fine.example.com" not in listed
    page = admin_client.get(reverse("admin:domains_domain_change", args=[paused.pk])).content.decode()
    assert URL.replace("&", "&amp;") in page
    response = admin_client.post(
        changelist, {"action": "mark_unpaused_action", "_selected_action": [paused.pk]}, follow=True
    )
    assert "Unpaused, and due now: paused.example.com" in response.content.decode()
    assert Domain.objects.get(pk=paused.pk).ca_unpause_url == ""


def test_the_command_lists_the_paused_domains_and_unpauses_the_named_ones(capsys):
    paused = _paused(name="paused.example.com")
    DomainFactory(name="fine.example.com")
    call_command("unpause_domains", "--list")
    assert "paused.example.com  paused " in capsys.readouterr().out
    call_command("unpause_domains", "Paused.Example.com", "fine.example.com")
    out = capsys.readouterr().out
    assert "paused.example.com: unpaused; due now" in out
    assert "fine.example.com: was not paused by the CA; left as it is" in out
    assert Domain.objects.get(pk=paused.pk).ca_unpause_url == ""
    with pytest.raises(CommandError, match=r"no such domain: nowhere\.example\.com"):
        call_command("unpause_domains", "nowhere.example.com")
    with pytest.raises(CommandError, match="name the domains"):
        call_command("unpause_domains")


def test_the_command_lists_a_paused_domain_whose_pause_time_was_lost(capsys):
    paused = _paused(name="untimed.example.com")
    # An operator's hand edit (or an older row): the URL without the time.
    Domain.objects.filter(pk=paused.pk).update(ca_paused_at=None)
    call_command("unpause_domains", "--list")
    assert "untimed.example.com  paused (time unknown)  " in capsys.readouterr().out
