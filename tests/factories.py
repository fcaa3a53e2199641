"""factory_boy factories for the models."""

from __future__ import annotations

import datetime

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from certificates.models import AcmeAccount, Certificate, CertificateSource, Order
from certificates.sealing import seal
from domains.models import App, Domain, Region


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"customer{n}")


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region
        django_get_or_create = ("name",)

    name = "osc-fr1"
    domain_suffix = "osc-fr1.example-paas.io"
    cname_target = "ingress.osc-fr1.example-paas.io"
    ingress_ipv4 = factory.LazyFunction(lambda: ["192.0.2.10", "192.0.2.11"])
    ingress_ipv6 = factory.LazyFunction(lambda: ["2001:db8::10"])


class AppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = App

    owner = factory.SubFactory(UserFactory)
    region = factory.SubFactory(RegionFactory)
    name = factory.Sequence(lambda n: f"my-app-{n}")


class DomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Domain

    app = factory.SubFactory(AppFactory)
    name = factory.Sequence(lambda n: f"www{n}.example.com")


class AcmeAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AcmeAccount

    directory_url = factory.Sequence(lambda n: f"https://acme{n}.example.net/dir")
    key = factory.LazyFunction(lambda: seal(b'{"kty": "EC", "test": "account key"}'))


class CertificateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Certificate

    domain = factory.SubFactory(DomainFactory)
    source = CertificateSource.LETSENCRYPT
    fullchain_pem = "-----BEGIN CERTIFICATE-----\n(test)\n-----END CERTIFICATE-----\n"
    private_key = factory.Sequence(lambda n: seal(f"private key {n}".encode()))
    not_before = factory.LazyFunction(timezone.now)
    not_after = factory.LazyAttribute(lambda o: o.not_before + datetime.timedelta(days=90))
    sans = factory.LazyAttribute(lambda o: [o.domain.name])
    issuer = "CN=Pebble Intermediate CA"
    serial = factory.Sequence(lambda n: f"{n:032x}")
    fingerprint_sha256 = factory.Sequence(lambda n: f"{n:064x}")


class OrderFactory(factory.django.DjangoModelFactory):
    """An order of one name, pending (no URL at the CA yet), with a placeholder sealed key: pass a
    real `private_key` and `account` for an order a step will send to a CA."""

    class Meta:
        model = Order

    domain = factory.SubFactory(DomainFactory)
    account = factory.SubFactory(AcmeAccountFactory)
    names = factory.LazyAttribute(lambda o: [o.domain.name])
    private_key = factory.LazyFunction(lambda: seal(b"key"))
