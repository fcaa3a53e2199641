"""The platform's own names in the mock DNS, as the platform's real DNS has them: each region's CNAME
target and each app's hostname (`<app>.<region suffix>`) resolve to the region's ingress addresses.

Without them, the record Certwright asks customers for (`www.example.com. CNAME demo.<suffix>.`)
leads nowhere: the CA cannot resolve it. The platform's certificate of a region (`*.<suffix>`,
domains/platform.py) needs that literal name at the ingress (the pre-flight asks for it; challtestsrv
matches names exactly, so it stands for a real zone's wildcard record) and, when its challenge
record lies outside DNS01_ZONE, the one-time CNAME delegating it, as an operator adds them once.
`make run` keeps challtestsrv in step with the database
from a thread, every few seconds, so apps and regions added, renamed or removed meanwhile follow.
The product knows nothing of challtestsrv: this is the development stack standing in for the
platform's DNS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection

from certificates import dns01
from devstack.pebble import ChallTestSrv
from domains.models import App, Region
from domains.platform import PLATFORM_APP_NAME, platform_domains

# (IPv4 addresses, IPv6 addresses), each sorted.
Addresses = tuple[tuple[str, ...], tuple[str, ...]]


def _host(name: str) -> str:
    # challtestsrv matches names as given: publish them as resolvers ask, lowercase, no final dot.
    return name.strip().rstrip(".").lower()


def platform_names() -> dict[str, Addresses]:
    """Every name the platform answers for, with the addresses it resolves to (two queries)."""
    regions = {
        pk: (_host(suffix), _host(target), (tuple(sorted(ipv4)), tuple(sorted(ipv6))))
        for pk, suffix, target, ipv4, ipv6 in Region.objects.values_list(
            "pk", "domain_suffix", "cname_target", "ingress_ipv4", "ingress_ipv6"
        )
    }
    names = {target: addresses for _, target, addresses in regions.values() if target}
    # The platform's own app has no hostname of its own; its certificate's name stands for all.
    for app_name, region_id in (
        App.objects.exclude(name=PLATFORM_APP_NAME).values_list("name", "region_id").iterator()
    ):
        suffix, _, addresses = regions[region_id]
        names[f"{_host(app_name)}.{suffix}"] = addresses
    for region_id, name in platform_domains().values_list("app__region_id", "name"):
        names[_host(name)] = regions[region_id][2]
    return names


def platform_delegations() -> dict[str, str]:
    """The CNAMEs delegating the platform certificates' challenge records into DNS01_ZONE, where
    they lie outside it: {`_acme-challenge.<suffix>`: target}."""
    if not dns01.enabled():
        return {}
    return {
        dns01.challenge_owner(name): dns01.delegation_target(name)
        for name in platform_domains().values_list("name", flat=True)
        if dns01.delegated(name)
    }


class PlatformDns:
    """Publishes `platform_names()` in challtestsrv, sending only what changed since the last sync."""

    def __init__(self, challtestsrv: ChallTestSrv) -> None:
        self.challtestsrv = challtestsrv
        # What challtestsrv holds, as far as this object has told it.
        self.published: dict[str, Addresses] = {}
        self.delegations: dict[str, str] = {}
        # The background thread and a caller that needs a name now (the demo) may sync at once.
        self._lock = threading.Lock()

    def sync(self) -> int:
        """Brings challtestsrv in step with the database; returns how many names changed."""
        with self._lock:
            return self._sync()

    def _sync(self) -> int:
        wanted = platform_names()
        changed = 0
        for name in sorted(self.published.keys() - wanted.keys()):
            self._clear(name)
            del self.published[name]
            changed += 1
        for name, addresses in sorted(wanted.items()):
            if self.published.get(name) == addresses:
                continue
            # challtestsrv adds to a name's addresses: clear first, so that a removed one goes.
            self._clear(name)
            self.published.pop(name, None)
            ipv4, ipv6 = addresses
            if ipv4:
                self.challtestsrv.add_a(name, list(ipv4))
            if ipv6:
                self.challtestsrv.add_aaaa(name, list(ipv6))
            self.published[name] = addresses
            changed += 1
        return changed + self._sync_delegations()

    def _sync_delegations(self) -> int:
        wanted = platform_delegations()
        changed = 0
        for owner in sorted(self.delegations.keys() - wanted.keys()):
            self.challtestsrv.clear_cname(owner)
            del self.delegations[owner]
            changed += 1
        for owner, target in sorted(wanted.items()):
            if self.delegations.get(owner) != target:
                self.challtestsrv.set_cname(owner, f"{target}.")
                self.delegations[owner] = target
                changed += 1
        return changed

    def _clear(self, name: str) -> None:
        self.challtestsrv.clear_a(name)
        self.challtestsrv.clear_aaaa(name)

    def keep_in_step(self, interval: float, say: Callable[[str], None]) -> threading.Event:
        """Syncs every `interval` seconds in a daemon thread until the returned event is set; a
        failure is said once (not every round) and retried."""
        stop = threading.Event()

        def loop() -> None:
            failing = None
            while not stop.is_set():
                try:
                    self.sync()
                    if failing:
                        say("mock DNS: the platform's names are published again")
                    failing = None
                except Exception as exc:  # the database or challtestsrv is away: say so, try again
                    problem = f"{type(exc).__name__}: {exc}"
                    if problem != failing:
                        say(f"mock DNS: cannot publish the platform's names ({problem}); retrying")
                    failing = problem
                finally:
                    # A new connection each round: this thread must not hold one across a restart.
                    connection.close()
                stop.wait(interval)

        threading.Thread(target=loop, name="platform-dns", daemon=True).start()
        return stop
