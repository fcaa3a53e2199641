"""The suite's real services answer: a task crosses Redis to a worker, DNS records reach dnspython."""

from __future__ import annotations

import time

import dns.resolver
import pytest
from django.conf import settings

from config.celery import app as celery_app
from workers.models import Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _resolver() -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    host, port = settings.DNS_RESOLVERS[0]
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = 3
    return resolver


def test_task_sent_through_redis_runs_on_a_real_worker_and_writes_postgresql(celery_worker):
    assert not Heartbeat.objects.filter(source=Heartbeat.Source.WORKER).exists()
    celery_app.send_task("workers.tasks.housekeeping.heartbeat")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if Heartbeat.objects.filter(source=Heartbeat.Source.WORKER).exists():
            break
        time.sleep(0.1)
    beat = Heartbeat.objects.get(source=Heartbeat.Source.WORKER)
    assert (time.time() - beat.at.timestamp()) < 30
    assert "workers.tasks.housekeeping.heartbeat" in celery_worker.log_path.read_text()


def test_challtestsrv_a_record_is_answered_to_dnspython_and_cleared(challtestsrv):
    challtestsrv.add_a("infra-check.example.com", ["192.0.2.10", "192.0.2.11"])
    answer = _resolver().resolve("infra-check.example.com", "A")
    assert sorted(r.address for r in answer) == ["192.0.2.10", "192.0.2.11"]
    challtestsrv.clear_a("infra-check.example.com")
    with pytest.raises(dns.resolver.NoAnswer):
        _resolver().resolve("infra-check.example.com", "A")


@pytest.mark.parametrize(
    ("setter", "rdtype", "expected"),
    [
        (lambda c: c.add_aaaa("v6.example.com", ["2001:db8::1"]), "AAAA", "2001:db8::1"),
        (lambda c: c.set_cname("alias.example.com", "target.example.net"), "CNAME", "target.example.net."),
        (lambda c: c.set_txt("_certwright-challenge.example.com", "token-123"), "TXT", '"token-123"'),
        (
            lambda c: c.add_caa("caa.example.com", [{"tag": "issue", "value": "letsencrypt.org"}]),
            "CAA",
            '0 issue "letsencrypt.org"',
        ),
    ],
    ids=["aaaa", "cname", "txt", "caa"],
)
def test_challtestsrv_helper_sets_each_record_type(challtestsrv, setter, rdtype, expected):
    setter(challtestsrv)
    name = {"AAAA": "v6", "CNAME": "alias", "TXT": "_certwright-challenge", "CAA": "caa"}[
        rdtype
    ] + ".example.com"
    answer = _resolver().resolve(name, rdtype)
    assert [r.to_text() for r in answer] == [expected]
    challtestsrv.clear_all(name)


def test_pebble_serves_its_acme_directory_over_https_with_the_generated_listener_certificate(pebble_stack):
    import json
    import urllib.request

    with urllib.request.urlopen(pebble_stack.directory_url, context=pebble_stack.ssl_context()) as response:
        directory = json.load(response)
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    assert b"BEGIN CERTIFICATE" in pebble_stack.root_pem()
