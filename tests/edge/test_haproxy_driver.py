"""The HAProxy driver against a real HAProxy 2.6 started from the configuration Certwright ships, each
change seen in a real TLS handshake that verifies against the test PKI's root."""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import ssl
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from devstack.ports import free_port
from edge.drivers import DriverError, Served
from edge.drivers.haproxy import HaproxyDriver, leaf_hashes
from tests.edge.haproxy_process import handshake, restart_haproxy, start_haproxy
from tests.leak_watch import LEAKS
from tests.pki import Pki, key_pem, pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki("Certwright HAProxy Test")


@pytest.fixture(scope="module")
def root(pki, tmp_path_factory) -> str:
    return pki.write_root(tmp_path_factory.mktemp("root") / "root.pem")


def served(pki: Pki, name: str, *, sans: list[str] | None = None, extra_chain: int = 0) -> Served:
    """A real certificate for `name` (or for `sans`), its chain and key, as the agent hands it over;
    `extra_chain` repeats the intermediate to make a large bundle."""
    leaf, key = pki.leaf(sans or [name])
    chain = pki.chain_pem(leaf) + pem(pki.intermediate) * extra_chain
    return Served(
        name=name,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        source="custom",
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        pem=(chain + key_pem(key)).decode(),
    )


class Router:
    """A running HAProxy and what a driver needs to reach it."""

    def __init__(self, tmp_path: Path) -> None:
        self.https_port = free_port()
        self.process, self.socket, self.crt_list, self.cert_dir = start_haproxy(
            tmp_path / "haproxy", self.https_port, free_port(), free_port()
        )

    def driver(self) -> HaproxyDriver:
        return HaproxyDriver(self.socket, self.crt_list, self.cert_dir)

    def restart(self) -> None:
        self.process = restart_haproxy(self.process)

    def cli(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(self.socket)
            sock.sendall(command.encode() + b"\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply.decode()


@pytest.fixture
def router(tmp_path):
    router = Router(tmp_path)
    yield router
    router.process.stop()


def refused(port: int, name: str, root: str) -> bool:
    try:
        handshake(port, name, root)
    except ssl.SSLError as error:
        return "UNRECOGNIZED_NAME" in str(error) or "unrecognized name" in str(error)
    return False


def test_an_added_name_is_served_and_an_unknown_name_is_refused_never_given_a_customers_certificate(
    router, pki, root
):
    www = served(pki, "www.example.com")
    driver = router.driver()
    driver.start({})
    driver.apply("www.example.com", www)

    assert handshake(router.https_port, "www.example.com", root) == www.fingerprint
    assert refused(router.https_port, "unknown.example.org", root)
    # No SNI at all: strict-sni refuses too, instead of showing the first certificate of the list.
    context = ssl._create_unverified_context()  # noqa: S323 (checks what would be shown)
    with socket.create_connection(("127.0.0.1", router.https_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw)
    driver.close()


def test_a_replacement_is_served_without_reload_and_an_open_connection_keeps_working(router, pki, root):
    first, second = served(pki, "www.example.com"), served(pki, "www.example.com")
    driver = router.driver()
    driver.start({"www.example.com": first})
    pid = router.process.pid
    context = ssl.create_default_context(cafile=root)
    with socket.create_connection(("127.0.0.1", router.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="www.example.com") as tls:
            assert hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest() == first.fingerprint
            assert b"served by HAProxy" in exchange(tls)

            driver.apply("www.example.com", second)

            assert handshake(router.https_port, "www.example.com", root) == second.fingerprint
            # The connection opened before the change still carries requests.
            assert b"served by HAProxy" in exchange(tls)
    assert router.process.pid == pid and router.process.alive()
    driver.close()


def exchange(tls: ssl.SSLSocket) -> bytes:
    """One keep-alive HTTP/1.1 request on an open TLS connection; the answer's body."""
    tls.sendall(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int({key.lower(): value for key, value in headers.items()}[b"content-length"])
    while len(body) < length:
        body += tls.recv(4096)
    return body


def test_a_removed_name_fails_the_handshake_and_leaves_no_file(router, pki, root):
    www, other = served(pki, "www.example.com"), served(pki, "other.example.org")
    driver = router.driver()
    driver.start({"www.example.com": www, "other.example.org": other})

    driver.apply("www.example.com", None)

    assert refused(router.https_port, "www.example.com", root)
    assert handshake(router.https_port, "other.example.org", root) == other.fingerprint
    assert not (Path(router.cert_dir) / "www.example.com.pem").exists()
    assert Path(router.crt_list).read_text() == f"{router.cert_dir}/other.example.org.pem other.example.org\n"
    assert "www.example.com" not in router.cli("show ssl cert")
    driver.close()


def test_a_wildcard_serves_one_label_and_an_exact_name_wins_over_it(router, pki, root):
    wildcard, www = served(pki, "*.example.com"), served(pki, "www.example.com")
    driver = router.driver()
    driver.start({"*.example.com": wildcard, "www.example.com": www})

    assert handshake(router.https_port, "foo.example.com", root) == wildcard.fingerprint
    assert handshake(router.https_port, "www.example.com", root) == www.fingerprint
    assert refused(router.https_port, "a.b.example.com", root)
    assert refused(router.https_port, "example.com", root)
    # The file of a wildcard cannot be a host name's.
    assert (Path(router.cert_dir) / "_wildcard.example.com.pem").exists()
    driver.close()


def test_a_certificate_is_served_only_for_its_own_name_not_for_the_other_names_it_lists(router, pki, root):
    # A customer's certificate for shop.example.com that also lists www.example.com, a name it does not
    # serve here: the crt-list's SNI filter keeps HAProxy from indexing it under www.example.com.
    shop = served(pki, "shop.example.com", sans=["shop.example.com", "www.example.com"])
    driver = router.driver()
    driver.start({"shop.example.com": shop})

    assert handshake(router.https_port, "shop.example.com", root) == shop.fingerprint
    assert refused(router.https_port, "www.example.com", root)
    driver.close()


def test_a_bundle_over_the_buffer_is_refused_in_words_and_a_large_one_under_it_is_served(router, pki, root):
    www = served(pki, "www.example.com")
    driver = router.driver()
    driver.start({"www.example.com": www})
    huge = served(pki, "www.example.com", extra_chain=200)  # about 140 KB, over the 128 KiB buffer
    assert len(huge.pem) > 131072

    with pytest.raises(DriverError, match=r"does not fit HAProxy's buffer \(tune.bufsize 131,072"):
        driver.apply("www.example.com", huge)

    # Nothing was sent: HAProxy is up, still serves the previous certificate, the disk still holds it.
    assert router.process.alive()
    assert handshake(router.https_port, "www.example.com", root) == www.fingerprint
    assert leaf_hashes(Path(router.cert_dir) / "www.example.com.pem")[0] == www.fingerprint
    large = served(pki, "www.example.com", extra_chain=120)  # about 85 KB: over 64 KiB, under the cap
    driver.apply("www.example.com", large)
    assert handshake(router.https_port, "www.example.com", root) == large.fingerprint
    driver.close()


def test_haproxy_restarted_after_200_changes_serves_the_same_set_from_disk(router, pki, root):
    names = [f"n{i}.example.com" for i in range(40)] + ["*.example.net"]
    driver = router.driver()
    driver.start({})
    current: dict[str, Served] = {}
    chooser = random.Random(13)
    for _ in range(200):
        name = chooser.choice(names)
        if name in current and chooser.random() < 0.3:
            driver.apply(name, None)
            del current[name]
        else:
            current[name] = served(pki, name)
            driver.apply(name, current[name])
    driver.close()
    old_pid = router.process.pid

    router.restart()

    assert router.process.pid != old_pid
    for name in names:
        server_name = name.replace("*", "any")
        if name in current:
            assert handshake(router.https_port, server_name, root) == current[name].fingerprint, name
        else:
            assert refused(router.https_port, server_name, root), name
    for path in Path(router.cert_dir).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A driver started on the restarted HAProxy finds everything in sync and uploads nothing.
    files = {path.name: path.stat().st_mtime_ns for path in Path(router.cert_dir).iterdir()}
    driver = router.driver()
    driver.start(current)
    assert {path.name: path.stat().st_mtime_ns for path in Path(router.cert_dir).iterdir()} == files
    driver.close()


def test_start_reconciles_a_stale_haproxy_without_uploading_the_unchanged(router, pki, root, caplog):
    kept, changed, gone = (served(pki, f"{n}.example.com") for n in ("kept", "changed", "gone"))
    first = router.driver()
    first.start({"kept.example.com": kept, "changed.example.com": changed, "gone.example.com": gone})
    first.close()
    kept_file = Path(router.cert_dir) / "kept.example.com.pem"
    kept_written = kept_file.stat().st_mtime_ns
    renewed, new = served(pki, "changed.example.com"), served(pki, "new.example.com")

    caplog.set_level(logging.INFO, logger="certwright.edge.haproxy")
    driver = router.driver()
    driver.start({"kept.example.com": kept, "changed.example.com": renewed, "new.example.com": new})

    assert "HAProxy serves 3 names: 2 uploaded, 1 already in sync, 1 removed, 0 refused" in caplog.text
    assert kept_file.stat().st_mtime_ns == kept_written
    assert handshake(router.https_port, "kept.example.com", root) == kept.fingerprint
    assert handshake(router.https_port, "changed.example.com", root) == renewed.fingerprint
    assert handshake(router.https_port, "new.example.com", root) == new.fingerprint
    assert refused(router.https_port, "gone.example.com", root)
    assert sorted(Path(router.crt_list).read_text().splitlines()) == [
        f"{router.cert_dir}/{name}.pem {name}"
        for name in ("changed.example.com", "kept.example.com", "new.example.com")
    ]
    driver.close()


def test_start_trusts_what_haproxy_serves_not_the_disk_when_they_differ(router, pki, root):
    # The disk holds a certificate HAProxy never got (written by hand, or HAProxy was given another one
    # at its socket): HAProxy's own fingerprint decides what is in sync, not the file.
    old, new = served(pki, "www.example.com"), served(pki, "www.example.com")
    first = router.driver()
    first.start({"www.example.com": old})
    first.close()
    (Path(router.cert_dir) / "www.example.com.pem").write_text(new.pem)

    driver = router.driver()
    driver.start({"www.example.com": new})

    assert handshake(router.https_port, "www.example.com", root) == new.fingerprint
    driver.close()


def test_a_transaction_left_open_in_haproxy_is_aborted_and_never_takes_a_change(router, pki, root):
    a, b = served(pki, "a.example.com"), served(pki, "b.example.com")
    driver = router.driver()
    driver.start({"a.example.com": a})
    # Someone at the socket opened a transaction on a's file and left: HAProxy keeps it (one per process),
    # and a `set ssl cert` for b would update it.
    other = served(pki, "a.example.com")
    payload = other.pem.replace("\n\n", "\n").rstrip("\n")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(router.socket)
        sock.sendall(f"set ssl cert {router.cert_dir}/a.example.com.pem <<\n{payload}\n\n".encode())
        assert b"Transaction created" in sock.recv(65536)
    assert "# transaction" in router.cli("show ssl cert")

    driver.apply("b.example.com", b)

    assert handshake(router.https_port, "b.example.com", root) == b.fingerprint
    assert handshake(router.https_port, "a.example.com", root) == a.fingerprint
    assert "# transaction" not in router.cli("show ssl cert")
    driver.close()


def test_pem_files_are_0600_and_the_crt_list_names_each_file_with_its_name(router, pki):
    wildcard, www = served(pki, "*.example.com"), served(pki, "www.example.com")
    driver = router.driver()
    driver.start({"www.example.com": www})
    driver.apply("*.example.com", wildcard)

    assert Path(router.crt_list).read_text() == (
        f"{router.cert_dir}/_wildcard.example.com.pem *.example.com\n"
        f"{router.cert_dir}/www.example.com.pem www.example.com\n"
    )
    for path in Path(router.cert_dir).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in (Path(router.cert_dir) / "www.example.com.pem").read_text()
    driver.close()


def test_a_pem_whose_leaf_is_not_the_chosen_fingerprint_is_refused(router, pki):
    www = served(pki, "www.example.com")
    wrong = Served(www.name, "00" * 32, www.source, www.not_before, www.not_after, www.pem)
    driver = router.driver()
    driver.start({})
    with pytest.raises(DriverError, match=r"www\.example\.com: the PEM's leaf is"):
        driver.apply("www.example.com", wrong)
    driver.close()


def test_an_unreachable_socket_or_a_crt_list_haproxy_does_not_use_is_a_clear_error(router, tmp_path):
    with pytest.raises(DriverError, match="cannot reach HAProxy's socket"):
        HaproxyDriver(str(tmp_path / "nothing.sock"), router.crt_list, router.cert_dir).start({})
    unused = r"HAProxy has no crt-list .*/elsewhere \(.*\): its bind line must read"
    with pytest.raises(DriverError, match=unused):
        HaproxyDriver(router.socket, str(tmp_path / "elsewhere"), router.cert_dir).start({})
    with pytest.raises(DriverError, match="holds a character"):
        HaproxyDriver(router.socket, router.crt_list, str(tmp_path / "with space"))


def test_haproxys_log_holds_no_key(router, pki, root):
    driver = router.driver()
    driver.start({"www.example.com": served(pki, "www.example.com")})
    driver.apply("www.example.com", served(pki, "www.example.com"))
    handshake(router.https_port, "www.example.com", root)
    refused(router.https_port, "nothing.example.com", root)
    driver.close()
    router.process.stop()

    log = router.process.log_path.read_bytes()
    assert b"https" in log  # HAProxy did log the handshakes
    for what, pattern in LEAKS.items():
        assert not pattern.search(log), what


def test_a_name_that_is_not_a_host_name_is_refused(router, pki):
    driver = router.driver()
    driver.start({})
    with pytest.raises(DriverError, match="not a host name"):
        driver.apply("../etc/passwd", None)
    driver.close()


def test_a_driver_whose_haproxy_restarted_applies_the_next_change_on_a_new_connection(router, pki, root):
    www, shop = served(pki, "www.example.com"), served(pki, "shop.example.com")
    driver = router.driver()
    driver.start({"www.example.com": www})

    router.restart()
    driver.apply("shop.example.com", shop)

    assert handshake(router.https_port, "shop.example.com", root) == shop.fingerprint
    assert handshake(router.https_port, "www.example.com", root) == www.fingerprint
    driver.close()
