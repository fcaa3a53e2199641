"""Pointing a test domain at the platform as a customer would: its address, and the TXT record that
proves it is the app's (domains/ownership.py), since an A record to the shared ingress alone does not."""

from __future__ import annotations

from domains.ownership import challenge_name, ownership_token


def prove_ownership(challtestsrv, app, name: str) -> None:
    challtestsrv.set_txt(challenge_name(name), ownership_token(app.pk, name))


def point_at_platform(challtestsrv, app, name: str, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
    challtestsrv.add_a(name, list(addresses))
    prove_ownership(challtestsrv, app, name)
