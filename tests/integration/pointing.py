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


def without_reusable_authorizations(domain) -> None:
    """Deactivates the domain's authorizations at the CA, so that its next order is validated
    again: a CA may hand a still-valid authorization back to a new order (Pebble's authorization
    reuse), and a test that points the name elsewhere to make validation fail would then pass."""
    from certificates.models import Challenge
    from workers.acme_steps import deactivate_authorizations

    by_account: dict[int, list[str]] = {}
    for account_id, url in Challenge.objects.filter(order__domain=domain).values_list(
        "order__account_id", "authorization_url"
    ):
        by_account.setdefault(account_id, []).append(url)
    for account_id, urls in by_account.items():
        assert deactivate_authorizations(account_id, urls) == len(urls)
