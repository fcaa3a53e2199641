"""Issuance throughput and latency: certbot, the bare `acme` library, and Certwright, side by side.

One Pebble (PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0, PEBBLE_AUTHZREUSE=0) serves every phase;
its single HTTP-01 port is taken in turn by certbot's standalone server, the bare client's
responder, and Certwright's web processes.

(a) certbot certonly --standalone, 5 names one after another (a process per certificate).
(b) the bare acme library: one account, 100 threads, N names.
(c) Certwright: N domains whose DNS points at the platform, created at once and issued through the
    real web, Redis, PostgreSQL and workers (DNS pre-flight, Let's Encrypt's quota and every chain
    verification included), then 20 domains created one at a time on the idle stack, each timed to
    In use. Each name is under its own registered domain, as customers' domains are.
A run in which any certificate fails is void (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    ROOT,
    BenchStack,
    CpuMeter,
    command_cpu_seconds,
    group_cpu_seconds,
    median,
    say,
    wait_until,
)

PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


class BenchVoid(RuntimeError):
    """A certificate failed: the run proves nothing."""


def names(prefix: str, count: int) -> list[str]:
    # Each name under its own registered domain, as customers' domains are: Let's Encrypt's (and
    # Certwright's) limit of 50 certificates per registered domain per week does not apply across them.
    return [f"www.{prefix}-{i}-bench.com" for i in range(count)]


def point_at_this_machine(stack: BenchStack, hosts: list[str], app_id: int | None = None) -> None:
    """A records to this machine; with `app_id`, also each name's ownership TXT record for that app
    (an A record to the shared ingress does not prove which app a name is for)."""
    from domains.ownership import challenge_name, ownership_token

    for host in hosts:
        stack.pebble.challtestsrv.add_a(host, ["127.0.0.1"])
        if app_id is not None:
            stack.pebble.challtestsrv.set_txt(challenge_name(host), ownership_token(app_id, host))


# --- (a) certbot ---------------------------------------------------------------------------------


def run_certbot(stack: BenchStack, count: int) -> float:
    hosts = names("certbot", count)
    point_at_this_machine(stack, hosts)
    base = stack.state_dir / "certbot"
    env = {**os.environ, "REQUESTS_CA_BUNDLE": stack.env["ACME_CA_BUNDLE"]}
    certbot = str(Path(sys.executable).with_name("certbot"))
    started = time.monotonic()
    for host in hosts:
        result = subprocess.run(
            [
                certbot,
                "certonly",
                "--standalone",
                "--non-interactive",
                "--agree-tos",
                "--register-unsafely-without-email",
                "--server",
                stack.env["ACME_DIRECTORY_URL"],
                "--http-01-port",
                str(stack.ports["web"]),
                "--http-01-address",
                "127.0.0.1",
                "--config-dir",
                str(base / "config"),
                "--work-dir",
                str(base / "work"),
                "--logs-dir",
                str(base / "logs"),
                "-d",
                host,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BenchVoid(f"certbot failed for {host}: {result.stdout[-500:]}{result.stderr[-1500:]}")
    return count / (time.monotonic() - started)


# --- (b) the bare acme library --------------------------------------------------------------------


class _Responder(BaseHTTPRequestHandler):
    answers: dict[str, str] = {}

    def do_GET(self) -> None:
        token = self.path.rsplit("/", 1)[-1]
        answer = self.answers.get(token)
        self.send_response(200 if answer else 404)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if answer:
            self.wfile.write(answer.encode())

    def log_message(self, *args) -> None:
        pass


def run_bare(stack: BenchStack, count: int, threads: int) -> float:
    import josepy as jose
    from acme import challenges, client, crypto_util, messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    hosts = names("bare", count)
    point_at_this_machine(stack, hosts)
    server = ThreadingHTTPServer(("127.0.0.1", stack.ports["web"]), _Responder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca_bundle = stack.env["ACME_CA_BUNDLE"]
    account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(account_key, alg=jose.ES256, verify_ssl=ca_bundle)
    directory = client.ClientV2.get_directory(stack.env["ACME_DIRECTORY_URL"], net)
    registration = client.ClientV2(directory, net).new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True)
    )
    work: queue.Queue[str] = queue.Queue()
    for host in hosts:
        work.put(host)
    failures: list[str] = []

    def issue_all() -> None:
        thread_net = client.ClientNetwork(
            account_key, account=registration, alg=jose.ES256, verify_ssl=ca_bundle
        )
        acme = client.ClientV2(directory, thread_net)
        while True:
            try:
                host = work.get_nowait()
            except queue.Empty:
                return
            try:
                key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                order = acme.new_order(crypto_util.make_csr(key, [host]))
                for authorization in order.authorizations:
                    challenge = next(
                        c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
                    )
                    response, validation = challenge.response_and_validation(account_key)
                    _Responder.answers[challenge.chall.encode("token")] = validation
                    acme.answer_challenge(challenge, response)
                order = acme.poll_and_finalize(order)
                if "BEGIN CERTIFICATE" not in (order.fullchain_pem or ""):
                    failures.append(f"{host}: no certificate")
            except Exception as exc:
                failures.append(f"{host}: {type(exc).__name__}: {exc}")

    started = time.monotonic()
    pool = [threading.Thread(target=issue_all) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    if failures:
        raise BenchVoid(f"the bare client failed {len(failures)} certificate(s), e.g. {failures[0]}")
    return count / elapsed


# --- (c) Certwright -------------------------------------------------------------------------------


def run_certwright(stack: BenchStack, count: int, latency_samples: int) -> tuple[float, dict, float]:
    from django.contrib.auth import get_user_model

    from domains.models import App, Domain, DomainStatus, Region
    from domains.services import create_domain

    web = stack.start_web()
    worker = stack.start_worker("worker")
    region = Region.objects.create(
        name="bench",
        domain_suffix="bench.example-paas.io",
        cname_target="ingress.bench.example-paas.io",
        ingress_ipv4=["127.0.0.1"],
    )
    owner = get_user_model().objects.create(username="bench")
    app = App.objects.create(owner=owner, region=region, name="bench-app")
    hosts = names("certwright", count)
    timed_hosts = names("latency", latency_samples)
    point_at_this_machine(stack, hosts + timed_hosts, app.pk)
    redis_pid = stack.processes[0].pid
    meter = CpuMeter(
        {
            "web": lambda: group_cpu_seconds(web.pid),
            "workers": lambda: group_cpu_seconds(worker.pid),
            "pebble": lambda: group_cpu_seconds(stack.pebble.processes[1].pid),
            "postgresql": lambda: command_cpu_seconds("postgres"),
            "redis": lambda: group_cpu_seconds(redis_pid),
        }
    )

    # The benchmark's own polling is kept cheap (one indexed count per half second): its queries
    # are PostgreSQL CPU that the meter would otherwise charge to Certwright.
    def issued() -> int:
        return Domain.objects.filter(app=app, status=DomainStatus.IN_USE).count()

    def failed() -> list[str]:
        # Pending DNS is where every domain starts and Creating where orders run; with an error it is
        # a failed check or a quota wait.
        return list(
            Domain.objects.filter(
                app=app, status__in=[DomainStatus.FAILING, DomainStatus.PENDING_DNS, DomainStatus.CREATING]
            )
            .exclude(last_error="")
            .values_list("name", "last_error")[:3]
        )

    meter.start()
    started = time.monotonic()
    for host in hosts:
        create_domain(app, host)
    if not wait_until(lambda: issued() == count or bool(failed()), timeout=600, interval=0.5):
        raise BenchVoid(f"only {issued()} of {count} certificates after 600 s")
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    if failed():
        raise BenchVoid(f"Certwright failed certificates, e.g. {failed()}")

    time.sleep(2)
    latencies = []
    for host in timed_hosts:
        started_one = time.monotonic()
        domain = create_domain(app, host)
        ok = wait_until(
            lambda pk=domain.pk: Domain.objects.filter(pk=pk, status=DomainStatus.IN_USE).exists(),
            timeout=60,
            interval=0.01,
        )
        if not ok:
            raise BenchVoid(f"{host} did not reach In use within 60 s")
        latencies.append(time.monotonic() - started_one)
    return count / elapsed, {name: seconds / count for name, seconds in cpu.items()}, median(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="certificates for the bare and Certwright phases")
    parser.add_argument("--threads", type=int, default=100, help="threads of the bare client")
    parser.add_argument("--certbot", type=int, default=5, help="certificates certbot issues")
    parser.add_argument("--latency-samples", type=int, default=20)
    args = parser.parse_args()

    stack = BenchStack("issuance")
    try:
        stack.start_redis()
        stack.prepare_database()
        stack.start_pebble(PEBBLE_ENV)
        say(f"(a) certbot certonly --standalone, {args.certbot} names one after another")
        certbot_rate = run_certbot(stack, args.certbot)
        say(f"    {certbot_rate:.2f} certificates/s")
        say(f"(b) bare acme library, one account, {args.threads} threads, {args.n} names")
        bare_rate = run_bare(stack, args.n, args.threads)
        say(f"    {bare_rate:.2f} certificates/s")
        say(f"(c) Certwright, {args.n} domains at once through web, Redis, PostgreSQL and workers")
        certwright_rate, cpu_per_cert, median_s = run_certwright(stack, args.n, args.latency_samples)
        say(f"    {certwright_rate:.2f} certificates/s, {certwright_rate / bare_rate:.0%} of the bare client")
        say("    CPU seconds per certificate: " + ", ".join(f"{k} {v:.4f}" for k, v in cpu_per_cert.items()))
        say(
            f"    {args.latency_samples} domains one at a time, idle stack: median {median_s:.2f} s to In use"
        )
    except BenchVoid as void:
        say(f"VOID: {void}")
        return 1
    finally:
        stack.stop()
    say(
        f"RESULT certbot_per_s={certbot_rate:.2f} bare_per_s={bare_rate:.2f} "
        f"certwright_per_s={certwright_rate:.2f} ratio_vs_bare={certwright_rate / bare_rate:.2f} "
        f"median_s_to_in_use={median_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
