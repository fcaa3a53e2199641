"""The simulated hosts' network (devstack/netns.py): destroying it leaves nothing behind even when
the kernel still holds a host's namespace after its name is gone (as a killed host's orphaned TCP
sockets hold it for minutes); that host's veth then went on standing on the machine."""

from __future__ import annotations

import os
import subprocess

import pytest

from devstack.netns import NetnsUnavailable, Network, require_root

PREFIX = "cwtnt"


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if PREFIX in line]


def test_a_host_whose_namespace_the_kernel_still_holds_leaves_no_link_behind():
    try:
        require_root()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    network = Network(PREFIX, "10.231.9.0/24").create()
    held = None
    try:
        host = network.add_host("held")
        # Something outside the namespace holds it, as the kernel does for orphaned sockets.
        held = os.open(f"/run/netns/{host.namespace}", os.O_RDONLY)
        assert f"{PREFIX}held" in _links()

        network.destroy()

        assert _links() == []
    finally:
        if held is not None:
            os.close(held)
        network.destroy()
