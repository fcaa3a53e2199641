"""The production DNS-01 provider, RFC 2136 dynamic updates signed with TSIG, against a real BIND
(`named`, Debian's bind9) serving the platform's challenge zone on a free port. (Pebble resolves
through challtestsrv only, so the issuance tests use the challtestsrv provider; this is the same
interface against the kind of server production uses.)"""

from __future__ import annotations

import base64
import os
import shutil

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from certificates import dns01
from devstack.ports import free_tcp_udp_port
from devstack.processes import ManagedProcess, tcp_open

pytestmark = pytest.mark.integration

ZONE = "dns01.example-paas.net"
NAMED = shutil.which("named") or "/usr/sbin/named"


@pytest.fixture(scope="module")
def bind(tmp_path_factory):
    """named, authoritative for ZONE, taking updates signed with one TSIG key: (port, tsig)."""
    assert os.path.exists(NAMED), "named is missing: devstack/bootstrap.sh installs Debian's bind9"
    directory = tmp_path_factory.mktemp("bind")
    port = free_tcp_udp_port()
    secret = base64.b64encode(os.urandom(32)).decode()
    (directory / "zone.db").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 60 60 600 60\n"
        f"@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
    )
    (directory / "named.conf").write_text(
        f'options {{\n  directory "{directory}";\n  pid-file "{directory}/named.pid";\n'
        f'  session-keyfile "{directory}/session.key";\n  managed-keys-directory "{directory}";\n'
        f"  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
        "  recursion no;\n  dnssec-validation no;\n};\n"
        f'controls {{ }};\nkey "certwright" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
        f'zone "{ZONE}" {{ type primary; file "{directory}/zone.db";\n'
        '  allow-update { key "certwright"; }; };\n'
    )
    process = ManagedProcess(
        "named", [NAMED, "-g", "-n", "1", "-c", str(directory / "named.conf")], directory
    )
    process.start()
    process.wait_until(lambda: tcp_open("127.0.0.1", port), timeout=30, what="listening")
    yield port, f"certwright:hmac-sha256:{secret}"
    process.stop()


def _txt(port: int, owner: str) -> tuple[str, list[str]]:
    response = dns.query.udp(dns.message.make_query(owner + ".", dns.rdatatype.TXT), "127.0.0.1", port=port)
    values = [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]
    return dns.rcode.to_text(response.rcode()), values


def test_publish_replaces_the_record_and_remove_deletes_it(bind):
    port, tsig = bind
    provider = dns01.Rfc2136(f"127.0.0.1:{port}", ZONE, tsig)
    owner = f"abcdefghijklmnopqrstuvwxyz234567.{ZONE}"
    provider.publish(owner, "first-value")
    assert _txt(port, owner) == ("NOERROR", ["first-value"])
    # A second order's value replaces the first: the CA sees one record.
    provider.publish(owner, "second-value")
    assert _txt(port, owner) == ("NOERROR", ["second-value"])
    provider.remove(owner)
    assert _txt(port, owner)[1] == []
    # Removing what is not there is no error (an order's cleanup may run twice).
    provider.remove(owner)


def test_an_update_signed_with_another_key_is_refused_and_says_so(bind):
    port, _ = bind
    stranger = f"certwright:hmac-sha256:{base64.b64encode(os.urandom(32)).decode()}"
    provider = dns01.Rfc2136(f"127.0.0.1:{port}", ZONE, stranger)
    with pytest.raises(dns01.PublishFailed, match=r"rejects its signature .*check DNS01_RFC2136_TSIG"):
        provider.publish(f"stranger.{ZONE}", "value")
    unknown = dns01.Rfc2136(f"127.0.0.1:{port}", ZONE, stranger.replace("certwright:", "someone-else:"))
    with pytest.raises(dns01.PublishFailed, match="does not know the key"):
        unknown.publish(f"stranger.{ZONE}", "value")
    assert _txt(port, f"stranger.{ZONE}")[1] == []


def test_an_unsigned_update_is_refused(bind):
    port, _ = bind
    with pytest.raises(dns01.PublishFailed, match="the DNS server answered REFUSED"):
        dns01.Rfc2136(f"127.0.0.1:{port}", ZONE, "").publish(f"unsigned.{ZONE}", "value")


def test_a_server_that_does_not_answer_is_named():
    port = free_tcp_udp_port()
    with pytest.raises(dns01.PublishFailed, match=rf"127\.0\.0\.1:{port} did not answer"):
        dns01.Rfc2136(f"127.0.0.1:{port}", ZONE, "").publish(f"x.{ZONE}", "value")


def test_the_settings_choose_the_rfc2136_provider(settings, bind):
    port, tsig = bind
    settings.DNS01_PROVIDER = "rfc2136"
    settings.DNS01_RFC2136_SERVER = f"127.0.0.1:{port}"
    settings.DNS01_RFC2136_TSIG = tsig
    settings.DNS01_ZONE = ZONE
    provider = dns01.provider()
    owner = dns01.delegation_target("*.example.com")
    assert owner.endswith("." + ZONE)
    provider.publish(owner, dns01.txt_value("token.thumbprint"))
    assert _txt(port, owner) == ("NOERROR", [dns01.txt_value("token.thumbprint")])
    provider.remove(owner)
