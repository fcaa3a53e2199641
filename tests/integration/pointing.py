"""Pointing a test domain at the platform as a customer would: its address, and the TXT record that
proves it is the app's (domains/ownership.py), since an A record to the shared ingress alone does not;
or a CNAME to the app's own hostname, which the platform's DNS resolves to the ingress."""

from __future__ import annotations

from domains.ownership import challenge_name, ownership_token


def prove_ownership(challtestsrv, app, name: str) -> None:
    challtestsrv.set_txt(challenge_name(name), ownership_token(app.pk, name))


def point_at_platform(challtestsrv, app, name: str, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
    challtestsrv.add_a(name, list(addresses))
    prove_ownership(challtestsrv, app, name)


def point_by_cname(challtestsrv, app, name: str) -> None:
    """`name CNAME <app>.<suffix>`, the record Certwright asks for, with the app's hostname at the
    region's ingress addresses as the platform's DNS has it (the CA resolves the whole chain)."""
    hostname = app.default_hostname
    challtestsrv.clear_a(hostname)
    challtestsrv.clear_aaaa(hostname)
    if app.region.ingress_ipv4:
        challtestsrv.add_a(hostname, list(app.region.ingress_ipv4))
    if app.region.ingress_ipv6:
        challtestsrv.add_aaaa(hostname, list(app.region.ingress_ipv6))
    challtestsrv.set_cname(name, f"{hostname}.")
