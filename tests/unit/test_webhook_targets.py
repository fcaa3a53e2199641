"""The webhook address rule and URL form (domains/webhook_targets.py): pure functions, so no
connection is ever attempted here; every refused form names why."""

from __future__ import annotations

import ipaddress

import pytest

from domains.webhook_targets import RefusedDestination, address_problem, check_url, embedded_ipv4

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("fd00::1", "private"),
    ("fc00::1", "private"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to refuse, not one bound)
    ("::", "unspecified"),
    ("192.0.2.1", "private"),  # documentation (TEST-NET-1)
    ("2001:db8::1", "private"),  # documentation
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # IPv4 inside IPv6: mapped, compatible, 6to4, NAT64 (well-known and local-use), Teredo.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "loopback"),
    ("2002:7f00:1::1", "loopback"),
    ("2002:a9fe:a9fe::", "link-local"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("64:ff9b:1::a00:1", "private"),
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_public_addresses_are_refused_and_the_kind_is_named(address, kind):
    problem = address_problem(address)

    assert problem is not None
    assert f"({kind})" in problem
    assert "not a public address" in problem


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::5db8:d70e"]
)
def test_public_addresses_pass(address):
    assert address_problem(address) is None


def test_an_ipv6_form_names_the_ipv4_address_it_carries():
    problem = address_problem("::ffff:127.0.0.1")

    assert "::ffff:7f00:1 (which carries 127.0.0.1)" in problem


def test_a_teredo_address_is_judged_by_the_ipv4_addresses_it_carries():
    # Teredo 2001:0::/32: server 65.54.227.120, client (obfuscated) 127.0.0.1.
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:80ff:fffe")

    assert ipaddress.IPv4Address("127.0.0.1") in embedded_ipv4(teredo)
    assert address_problem(teredo) is not None


def test_an_allowed_network_lets_its_addresses_through_and_no_other():
    allowed = (ipaddress.ip_network("127.0.0.3/32"),)

    assert address_problem("127.0.0.3", allowed) is None
    assert "loopback" in address_problem("127.0.0.1", allowed)
    assert "loopback" in address_problem("::ffff:127.0.0.1", allowed)


def test_something_that_is_no_address_is_said_to_be_none():
    assert address_problem("localhost") == "'localhost' is not an IP address"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("ftp://example.com/hook", "must start with https://"),
        ("http://example.com/hook", "must start with https://"),
        ("https:///hook", "names no host"),
        ("https://user:pw@example.com/hook", "carries credentials"),
        ("https://example.com/hook#frag", "fragment"),
        ("https://example.com:0/hook", "port is 0"),
        ("https://example.com:99999/hook", "cannot be read"),
        ("https://exa mple.com/hook", "spaces or control characters"),
        (" https://example.com/hook", "spaces or control characters"),
        ("https://example.com/\nhook", "spaces or control characters"),
        ("https://bücher.example/hook", "xn-- form"),
        ("https://" + "a" * 64 + ".example/hook", "not a valid host name"),
        ("https://example.com/" + "a" * 2000, "longer than 2000"),
        ("https://[::1/hook", "cannot be read"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url, words):
    with pytest.raises(RefusedDestination) as refused:
        check_url(url, allow_http=False)

    assert words in str(refused.value)


def test_plain_http_passes_only_when_allowed():
    assert check_url("http://example.com/hook", allow_http=True).hostname == "example.com"
    assert check_url("https://[2606:4700::1]:8443/hook", allow_http=False).port == 8443
