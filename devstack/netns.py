"""Simulated hosts on this machine: one network namespace per host, joined by a bridge.

The bridge lives in the root namespace and carries the only address outside the namespaces, the
services' address (PostgreSQL, Redis, Pebble and its DNS listen there). Each host gets a veth pair
(one end on the bridge, the other inside its namespace as `eth0`) with one address of the subnet,
`lo` up, and no default route: a host reaches the bridge's subnet and nothing else, so no test
traffic can leave the machine. The machine's FORWARD policy may be DROP; one rule scoped to the
bridge (`-i <bridge> -o <bridge>`) lets the hosts talk to each other, and is removed afterwards.

Everything is named after a prefix, so that `remove_leftovers(prefix)` can clear what a crashed
earlier run left behind (namespaces, the bridge, the FORWARD rule) before a new run starts.

Faults: `kill` sends SIGKILL to every process in a host's namespace (a host powered off); `cut`
drops, inside the host's namespace, every packet to the given ports of the services' address (a
partition: no reset, connections hang as across a broken network, and resume when `heal` removes
the rules). The rules live in the host's own namespace, so the machine's tables are not touched.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Linux interface names hold at most 15 bytes.
IFNAME_MAX = 15


class NetnsUnavailable(RuntimeError):
    """This machine cannot make namespaces (not root, or no `ip`/`iptables`)."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (ip netns, iptables)")
    for tool in ("ip", "iptables"):
        if _run(["which", tool], check=False).returncode != 0:
            raise NetnsUnavailable(f"`{tool}` not found: install Debian's iproute2 and iptables")


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def remove_leftovers(prefix: str) -> list[str]:
    """Removes the namespaces, bridge and FORWARD rule of an earlier run under `prefix` (killing the
    processes still in those namespaces); returns what it removed."""
    removed = []
    listing = _run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            _kill_namespace(name)
            _run(["ip", "netns", "delete", name], check=False)
            removed.append(f"namespace {name}")
    bridge = f"{prefix}br"
    # A deleted namespace outlives its name while the kernel still holds it (a killed host's
    # orphaned TCP sockets, retrying for minutes behind a cut), and so does its veth's outer end.
    # Deleting that end removes the pair at once, whatever holds the namespace.
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        link = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if link.startswith(prefix) and link != bridge:
            _run(["ip", "link", "delete", link], check=False)
            removed.append(f"link {link}")
    while _run(["iptables", "-C", *_forward_rule(bridge)], check=False).returncode == 0:
        _run(["iptables", "-D", *_forward_rule(bridge)], check=False)
        removed.append(f"FORWARD rule of {bridge}")
    if _run(["ip", "link", "show", bridge], check=False).returncode == 0:
        _run(["ip", "link", "delete", bridge], check=False)
        removed.append(f"bridge {bridge}")
    return removed


def namespace_pids(namespace: str) -> list[int]:
    out = _run(["ip", "netns", "pids", namespace], check=False).stdout
    return [int(pid) for pid in out.split()]


def _kill_namespace(namespace: str) -> int:
    """SIGKILL to every process in the namespace, until none is left; returns how many there were."""
    killed: set[int] = set()
    for _ in range(100):
        pids = [pid for pid in namespace_pids(namespace) if not _is_zombie(pid)]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return len(killed)


def _is_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent: it holds nothing, and cannot be killed again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@dataclass
class Host:
    """One simulated host: a namespace and its address on the bridge."""

    name: str
    namespace: str
    address: str
    cut_rules: list[list[str]] = field(default_factory=list)

    def command(self, argv: Iterable[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def kill(self) -> int:
        """Every process of the host killed outright (SIGKILL); returns how many there were."""
        return _kill_namespace(self.namespace)

    def cut(self, address: str, ports: Iterable[int]) -> None:
        """Drops every packet this host sends to `address` on `ports` (TCP), until `heal`."""
        for port in ports:
            rule = ["OUTPUT", "-d", address, "-p", "tcp", "--dport", str(port), "-j", "DROP"]
            _run(["ip", "netns", "exec", self.namespace, "iptables", "-I", *rule])
            self.cut_rules.append(rule)

    def heal(self) -> None:
        for rule in self.cut_rules:
            _run(["ip", "netns", "exec", self.namespace, "iptables", "-D", *rule], check=False)
        self.cut_rules.clear()


@dataclass
class Network:
    """A bridge with the services' address and one namespace per host, all named after `prefix`
    (at most 6 characters: interface names are short)."""

    prefix: str
    subnet: str = "10.231.0.0/24"
    hosts: dict[str, Host] = field(default_factory=dict)
    forward_rule_added: bool = False

    def __post_init__(self) -> None:
        if not self.prefix.isalnum() or len(self.prefix) > 6:
            raise ValueError("the prefix must be at most 6 letters or digits")
        self.network = ipaddress.ip_network(self.subnet)
        self.bridge = f"{self.prefix}br"
        self.services_address = str(self.network.network_address + 1)

    def create(self) -> Network:
        """Clears leftovers of an earlier run under the prefix, then makes the bridge with its
        address and the FORWARD rule."""
        require_root()
        remove_leftovers(self.prefix)
        self._clash_check()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.services_address}/{self.network.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        _run(["iptables", "-I", *_forward_rule(self.bridge)])
        self.forward_rule_added = True
        return self

    def _clash_check(self) -> None:
        routes = _run(["ip", "-4", "route", "show"], check=False).stdout
        for line in routes.splitlines():
            destination = line.split()[0]
            if destination == "default":
                continue
            try:
                other = ipaddress.ip_network(destination, strict=False)
            except ValueError:
                continue
            if other.overlaps(self.network):
                raise NetnsUnavailable(f"{self.subnet} overlaps a route of this machine: {line}")

    def add_host(self, name: str) -> Host:
        """A namespace `<prefix>-<name>` with `lo` up and `eth0` on the bridge, no default route."""
        index = len(self.hosts) + 2
        namespace = f"{self.prefix}-{name}"
        outside = f"{self.prefix}{name}"[:IFNAME_MAX]
        address = str(self.network.network_address + index)
        _run(["ip", "netns", "add", namespace])
        _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        _run(["ip", "link", "set", outside, "master", self.bridge])
        _run(["ip", "link", "set", outside, "up"])
        inside = ["ip", "netns", "exec", namespace, "ip"]
        _run([*inside, "link", "set", "lo", "up"])
        _run([*inside, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        host = Host(name=name, namespace=namespace, address=address)
        self.hosts[name] = host
        return host

    def destroy(self) -> None:
        """Kills every host's processes and removes the namespaces, the bridge and the rule."""
        for host in self.hosts.values():
            host.kill()
        self.hosts.clear()
        remove_leftovers(self.prefix)
        self.forward_rule_added = False
