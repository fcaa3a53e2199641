"""The routers' change feed is written by the database at commit: one row per change of what a
name serves, none for a change that serves nothing new or is rolled back, in commit order, with a
NOTIFY per row."""

from __future__ import annotations

import datetime
import threading

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from certificates.feed import changes_after
from certificates.models import SERVED_CHANGES_CHANNEL, Certificate, CertificateSource, ServedChange
from tests.factories import AppFactory, CertificateFactory, DomainFactory, RegionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _feed(after: int = 0) -> list[tuple[str, int | None]]:
    return list(ServedChange.objects.filter(seq__gt=after).order_by("seq").values_list("name", "region_id"))


def _last() -> int:
    return ServedChange.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def test_a_new_certificate_is_a_change_of_its_domain_in_its_region():
    domain = DomainFactory(name="www.example.com")
    before = _last()
    CertificateFactory(domain=domain)
    assert _feed(before) == [("www.example.com", domain.app.region_id)]


def test_claims_and_backoff_on_a_certificate_serve_nothing_new_and_write_no_change():
    certificate = CertificateFactory()
    before = _last()
    Certificate.objects.filter(pk=certificate.pk).update(
        renew_at=timezone.now(), renewal_failures=3, renewal_error="Renewal failed: x"
    )
    DomainFactory._meta.model.objects.filter(pk=certificate.domain_id).update(
        status="failing", last_error="x", consecutive_failures=2
    )
    assert _feed(before) == []


def test_a_certificate_cut_short_replaced_or_deleted_is_a_change_each_time():
    certificate = CertificateFactory(domain=DomainFactory(name="shop.example.com"))
    before = _last()
    Certificate.objects.filter(pk=certificate.pk).update(
        not_after=timezone.now() + datetime.timedelta(days=1)
    )
    Certificate.objects.filter(pk=certificate.pk).update(fullchain_pem="-----BEGIN CERTIFICATE-----\nx\n")
    Certificate.objects.filter(pk=certificate.pk).delete()
    assert [name for name, _ in _feed(before)] == ["shop.example.com"] * 3


def test_lets_encrypt_switched_a_domain_renamed_or_moved_and_deleted_are_changes_in_each_region():
    here, there = (
        RegionFactory(name="here", domain_suffix="here.example-paas.io"),
        RegionFactory(name="there", domain_suffix="there.example-paas.io"),
    )
    domain = DomainFactory(name="a.example.com", app=AppFactory(region=here))
    moved_to = AppFactory(region=there)
    before = _last()
    type(domain).objects.filter(pk=domain.pk).update(letsencrypt_enabled=False)
    type(domain).objects.filter(pk=domain.pk).update(app=moved_to)
    type(domain).objects.filter(pk=domain.pk).delete()
    assert _feed(before) == [
        ("a.example.com", here.pk),
        ("a.example.com", here.pk),
        ("a.example.com", here.pk),
        ("a.example.com", there.pk),
        ("a.example.com", there.pk),
    ]


def test_a_rolled_back_change_writes_nothing():
    domain = DomainFactory()
    before = _last()
    with pytest.raises(RuntimeError), transaction.atomic():
        CertificateFactory(domain=domain)
        raise RuntimeError("undo")
    assert _feed(before) == []


def test_the_rows_of_a_change_are_written_at_its_commit_not_before():
    domain = DomainFactory()
    before = _last()
    with transaction.atomic():
        CertificateFactory(domain=domain)
        assert _feed(before) == []
    assert len(_feed(before)) == 1


def test_seq_follows_commit_order_not_the_order_in_which_the_changes_were_made():
    """The first transaction changes its certificate, then waits while a second one changes and
    commits: the second's row must come first, or a router reading in between would step past the
    first's seq and never see it."""
    first, second = CertificateFactory(), CertificateFactory()
    before = _last()
    changed, release = threading.Event(), threading.Event()

    def slow() -> None:
        with transaction.atomic():
            Certificate.objects.filter(pk=first.pk).update(
                not_after=timezone.now() + datetime.timedelta(days=2)
            )
            changed.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=slow)
    thread.start()
    assert changed.wait(10)
    Certificate.objects.filter(pk=second.pk).update(not_after=timezone.now() + datetime.timedelta(days=3))
    release.set()
    thread.join(10)
    rows = list(ServedChange.objects.filter(seq__gt=before).order_by("seq").values_list("name", flat=True))
    assert rows == [second.domain.name, first.domain.name]


def test_each_committed_change_notifies_its_seq_on_the_feed_channel():
    settings = connection.settings_dict
    listener = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    )
    try:
        listener.execute(f"LISTEN {SERVED_CHANGES_CHANNEL}")
        CertificateFactory(source=CertificateSource.CUSTOM)
        seq = _last()
        notes = [note.payload for note in listener.notifies(timeout=5, stop_after=1)]
    finally:
        listener.close()
    assert notes == [str(seq)]


def _custom(domain, **fields):
    return CertificateFactory(
        domain=domain, source=CertificateSource.CUSTOM, issuer="CN=Customer CA", **fields
    )


def test_changes_after_a_cursor_name_each_changed_name_once_with_its_candidates_in_serving_order():
    now = timezone.now()
    domain = DomainFactory(name="www.example.com")
    before = _last()
    older = CertificateFactory(domain=domain, not_before=now - datetime.timedelta(days=80))
    newer = CertificateFactory(domain=domain, not_before=now - datetime.timedelta(days=10))
    custom = _custom(domain, not_after=now + datetime.timedelta(hours=1))
    CertificateFactory(domain=domain, not_before=now - datetime.timedelta(days=100))  # expired
    changes = changes_after(before, now=now)
    assert changes.cursor == _last()
    [change] = changes.names
    assert change.name == "www.example.com" and change.seq == changes.cursor
    # The custom one until it ends, then the newest Let's Encrypt one; the expired one is not listed.
    assert [c.pk for c in change.candidates] == [custom.pk, newer.pk, older.pk]
    assert changes_after(changes.cursor, now=now).names == []


def test_a_name_that_serves_nothing_any_more_is_listed_with_no_candidates():
    domain = DomainFactory(name="gone.example.com")
    CertificateFactory(domain=domain)
    before = _last()
    type(domain).objects.filter(pk=domain.pk).update(letsencrypt_enabled=False)
    [change] = changes_after(before).names
    assert (change.name, change.candidates) == ("gone.example.com", [])
    before = _last()
    type(domain).objects.filter(pk=domain.pk).delete()
    [change] = changes_after(before).names
    assert (change.name, change.candidates) == ("gone.example.com", [])


def test_a_router_of_one_region_never_gets_another_regions_certificates_and_drops_a_name_moved_away():
    here = RegionFactory(name="here", domain_suffix="here.example-paas.io")
    there = RegionFactory(name="there", domain_suffix="there.example-paas.io")
    ours = DomainFactory(name="ours.example.com", app=AppFactory(region=here))
    theirs = DomainFactory(name="theirs.example.com", app=AppFactory(region=there))
    before = _last()
    CertificateFactory(domain=ours)
    CertificateFactory(domain=theirs)
    changes = changes_after(before, regions=[here.pk])
    assert [(c.name, len(c.candidates)) for c in changes.names] == [("ours.example.com", 1)]
    before = _last()
    type(ours).objects.filter(pk=ours.pk).update(app=AppFactory(region=there))
    assert [(c.name, c.candidates) for c in changes_after(before, regions=[here.pk]).names] == [
        ("ours.example.com", [])
    ]
    [moved] = changes_after(before, regions=[there.pk]).names
    assert moved.name == "ours.example.com" and len(moved.candidates) == 1


def test_reading_with_a_small_limit_from_each_returned_cursor_sees_every_change():
    domains = [DomainFactory(name=f"n{i}.example.com") for i in range(7)]
    before = _last()
    for domain in domains:
        CertificateFactory(domain=domain)
    seen, cursor = [], before
    while page := changes_after(cursor, limit=3):
        if not page.names:
            break
        seen += [change.name for change in page.names]
        cursor = page.cursor
    assert seen == [domain.name for domain in domains]


def test_the_feeds_candidates_follow_the_serving_rule_for_every_mix_of_certificates():
    """certificates.feed.candidates (hand-written) lists exactly what the ORM rule may serve from now
    on (servable_source, not ended, serving_order), in its order, ties of not_after included."""
    from certificates.feed import candidates
    from certificates.serving import servable_source, serving_order

    now = timezone.now()
    day = datetime.timedelta(days=1)
    same_end = now + 60 * day
    mixes = {
        "letsencrypt-only": [("le", -day, 80 * day)],
        "two-letsencrypt": [("le", -30 * day, 60 * day), ("le", -day, 89 * day)],
        "same-second-twice": [("le", -day, None), ("le", -2 * day, None), ("custom", -day, None)],
        "custom-and-letsencrypt": [("le", -day, 80 * day), ("custom", -day, 300 * day)],
        "expired-custom": [("le", -day, 80 * day), ("custom", -400 * day, -day)],
        "not-yet-valid": [("le", day, 90 * day)],
        "expired-only": [("le", -100 * day, -10 * day)],
        "disabled-with-custom": [("le", -day, 80 * day), ("custom", -day, 300 * day)],
        "disabled-without-custom": [("le", -day, 80 * day)],
    }
    names = []
    for label, certificates in mixes.items():
        domain = DomainFactory(
            name=f"{label}.example.net", letsencrypt_enabled=not label.startswith("disabled")
        )
        for source, start, end in certificates:
            kind = CertificateSource.LETSENCRYPT if source == "le" else CertificateSource.CUSTOM
            CertificateFactory(
                domain=domain,
                source=kind,
                not_before=now + start,
                not_after=same_end if end is None else now + end,
            )
        names.append(domain.name)
    found = candidates(names, now)
    for name in names:
        by_rule = Certificate.objects.filter(
            servable_source(), domain__name=name, not_after__gt=now
        ).order_by(*serving_order())
        assert [c.pk for c in found[name]] == [c.pk for c in by_rule], name
    assert [c.source for c in found["same-second-twice.example.net"]] == [
        "custom",
        "letsencrypt",
        "letsencrypt",
    ]
    assert found["expired-only.example.net"] == [] and found["disabled-without-custom.example.net"] == []
    assert len(found["not-yet-valid.example.net"]) == 1  # served from its not_before on
