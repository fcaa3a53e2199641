"""`make run`: the whole stack on this machine, against a local Pebble, until Ctrl-C.

Starts Pebble and challtestsrv, then the web app under gunicorn, the feed service (gunicorn's ASGI
worker), HAProxy with the edge agent driving it (the demo router, as on a router host), a Celery
worker, beat and Flower, after preparing the database (create, migrate, admin user). Settings come
from the environment, then from `.env` (written on first run with fresh secrets), so a second run reuses them.

The mock DNS answers for the platform's own names (devstack/platform_dns.py), and every Pebble root
stays trusted across runs (devstack/pebble.py `trust_root`): the certificates an earlier run's
Pebble issued are still served, and must still verify.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import django
from cryptography.fernet import Fernet

from devstack.commands import beat_command, feed_command, flower_command, web_command, worker_command
from devstack.pebble import PebbleStack, trust_root
from devstack.processes import ManagedProcess, ProcessFailed, http_ok, tcp_open
from devstack.tls import write_localhost_tls

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# How often the mock DNS is brought in step with the platform's apps and regions.
PLATFORM_DNS_INTERVAL = 3.0


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _port(variable: str, default: int) -> int:
    value = os.environ.get(variable, str(default)).strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"[make run] {variable}={value!r} is not a port number (1 to 65535)")
    return int(value)


STATE = Path(os.environ.get("CERTWRIGHT_STATE_DIR") or ROOT / ".run").resolve()
ENV_FILE = Path(os.environ.get("CERTWRIGHT_ENV_FILE") or ROOT / ".env").resolve()
WEB_PORT = _port("CERTWRIGHT_WEB_PORT", 8000)
FLOWER_PORT = _port("CERTWRIGHT_FLOWER_PORT", 5555)
FEED_PORT = _port("CERTWRIGHT_FEED_PORT", 8001)
ROUTER_PORT = _port("CERTWRIGHT_ROUTER_PORT", 8443)
ROUTER_HTTP_PORT = _port("CERTWRIGHT_ROUTER_HTTP_PORT", 8080)
# The SMTP sink, the page where its mails are read, and the demo's webhook receiver.
SMTP_PORT = _port("CERTWRIGHT_SMTP_PORT", 8025)
MAIL_PAGE_PORT = _port("CERTWRIGHT_MAIL_PAGE_PORT", 8026)
WEBHOOK_DEMO_PORT = _port("CERTWRIGHT_WEBHOOK_DEMO_PORT", 8027)
PEBBLE_PORTS = {
    "acme": _port("CERTWRIGHT_PEBBLE_PORT", 14000),
    "management": _port("CERTWRIGHT_PEBBLE_MANAGEMENT_PORT", 15000),
    "dns": _port("CERTWRIGHT_DNS_PORT", 8053),
    "challtestsrv": _port("CERTWRIGHT_CHALLTESTSRV_PORT", 8055),
    "tls_alpn": _port("CERTWRIGHT_TLS_ALPN_PORT", 5001),
}


def shown(path: Path | str) -> str:
    """`path` as the user can type it from the repository: relative when it is inside."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def development_environment() -> dict[str, str]:
    """The process environment, over `.env`, over development defaults (fresh secrets saved to `.env`)."""
    saved = read_env_file(ENV_FILE)
    generated = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(12)}",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(12),
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
    }
    missing = {key: value for key, value in generated.items() if key not in saved}
    if missing:
        with ENV_FILE.open("a") as handle:
            handle.write("# Written by `make run` for local development; delete it to get new secrets.\n")
            for key, value in missing.items():
                handle.write(f"{key}={value}\n")
        saved.update(missing)
    defaults = {
        "DEBUG": "true",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/certwright",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "QUOTA_REDIS_URL": "redis://127.0.0.1:6379/1",
        "ACME_DIRECTORY_URL": f"https://127.0.0.1:{PEBBLE_PORTS['acme']}/dir",
        "ACME_CA_BUNDLE": str(STATE / "pebble" / "tls" / "ca.pem"),
        "ACME_CONTACT_EMAIL": "ops@example.com",
        "DNS_RESOLVERS": f"127.0.0.1:{PEBBLE_PORTS['dns']}",
        # Pebble validates HTTP-01 on the web's port (80 at Let's Encrypt), and so does the self check.
        "HTTP01_SELF_CHECK_PORT": str(WEB_PORT),
        # Pebble makes a new root at every start; it is added here before the workers start, after
        # the earlier runs' roots (their certificates are still served).
        "EXTRA_TRUSTED_ROOTS": str(STATE / "pebble" / "roots.pem"),
        # Wildcards over DNS-01: their challenge records go to the mock DNS, which Pebble asks.
        "DNS01_ZONE": "dns01.example-paas.net",
        "DNS01_PROVIDER": "challtestsrv",
        "DNS01_CHALLTESTSRV_URL": f"http://127.0.0.1:{PEBBLE_PORTS['challtestsrv']}",
        # Mail goes to the local SMTP sink; a user's first event is mailed within half a minute.
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(SMTP_PORT),
        "NOTIFICATION_GATHER_SECONDS": "5",
        "PUBLIC_BASE_URL": f"http://localhost:{WEB_PORT}",
        # The demo's webhook receiver listens on plain HTTP on this machine.
        "WEBHOOK_ALLOW_HTTP": "1",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    return {**defaults, **saved, **{k: v for k, v in os.environ.items() if k in defaults or k in saved}}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def ensure_database(url: str) -> None:
    import environ
    import psycopg
    from psycopg import sql

    config = environ.Env.db_url_config(url)
    name = config["NAME"]
    conninfo = dict(
        host=config.get("HOST") or "127.0.0.1",
        port=config.get("PORT") or 5432,
        user=config.get("USER") or "postgres",
        password=config.get("PASSWORD") or None,
        dbname="postgres",
        connect_timeout=5,
    )
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            say(f"created database {name}")


def manage(*args: str) -> None:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=dict(os.environ), check=False)
    if result.returncode != 0:
        say(f"`manage.py {' '.join(args)}` failed (exit {result.returncode}); see the error above")
        raise SystemExit(1)


def forget_pebble_account(directory_url: str) -> None:
    """Pebble forgets its accounts when it restarts: register ours again on first use."""
    from certificates.acme_client import reset_account
    from certificates.models import AcmeAccount

    for account in AcmeAccount.objects.filter(directory_url=directory_url).exclude(account_url=""):
        reset_account(account)


def main() -> int:
    ports = (WEB_PORT, FEED_PORT, FLOWER_PORT, ROUTER_PORT, ROUTER_HTTP_PORT, SMTP_PORT, MAIL_PAGE_PORT)
    for port in (*ports, WEBHOOK_DEMO_PORT, *PEBBLE_PORTS.values()):
        if not port_free(port):
            say(f"port {port} is already in use: is another `make run` still running? Stop it first.")
            return 1
    STATE.mkdir(exist_ok=True)
    env = development_environment()
    os.environ.update(env)
    logs = STATE / "logs"

    # The settings insist that ACME_CA_BUNDLE exists: make Pebble's listener certificate first.
    write_localhost_tls(STATE / "pebble" / "tls")
    ensure_database(env["DATABASE_URL"])
    django.setup()
    say("migrating the database")
    manage("migrate", "--noinput", "-v", "0")
    manage("collectstatic", "--noinput", "-v", "0")
    manage("ensure_superuser")
    api_token = ensure_api_token(env["DJANGO_SUPERUSER_USERNAME"])
    router_token = ensure_router_token()
    from devstack.demo import ensure_demo_app, run_demo
    from devstack.demo_notifications import (
        DemoReceiver,
        ensure_demo_notifications,
        ensure_demo_webhook,
        start_mail_sink,
    )
    from devstack.platform_dns import PlatformDns

    # Before the workers start: their first mails and deliveries find the sink and the receiver.
    mail_sink, mail_page = start_mail_sink(SMTP_PORT, MAIL_PAGE_PORT, STATE / "mail", say)
    receiver = DemoReceiver(WEBHOOK_DEMO_PORT, say).start()
    demo_app = ensure_demo_app(env["DJANGO_SUPERUSER_USERNAME"])
    demo_endpoint = ensure_demo_webhook(demo_app, receiver)
    ensure_demo_notifications(demo_app)

    processes: list[ManagedProcess] = []
    pebble = PebbleStack(
        state_dir=STATE / "pebble",
        acme_port=PEBBLE_PORTS["acme"],
        management_port=PEBBLE_PORTS["management"],
        dns_port=PEBBLE_PORTS["dns"],
        challtestsrv_port=PEBBLE_PORTS["challtestsrv"],
        # Pebble validates HTTP-01 on the web port, where the responder is.
        http01_port=WEB_PORT,
        tls_alpn_port=PEBBLE_PORTS["tls_alpn"],
    )

    def stop_all(*_args) -> None:
        say("stopping")
        for process in reversed(processes):
            process.stop()
        pebble.stop()
        receiver.stop()
        mail_page.shutdown()
        mail_sink.stop()
        say("stopped")
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        say("starting Pebble and pebble-challtestsrv")
        pebble.start()
        roots = Path(env["EXTRA_TRUSTED_ROOTS"])
        validity = datetime.timedelta(seconds=pebble.validity_seconds)
        kept = trust_root(roots, pebble.root_pem(), validity)
        if kept > 1:
            say(f"trusting this Pebble's root and {kept - 1} of earlier runs ({shown(roots)})")
        forget_pebble_account(env["ACME_DIRECTORY_URL"])
        platform_dns = PlatformDns(pebble.challtestsrv)
        platform_dns.sync()
        platform_dns.keep_in_step(PLATFORM_DNS_INTERVAL, say)
        specs = [
            (
                "web",
                web_command(f"0.0.0.0:{WEB_PORT}"),
                lambda: http_ok(f"http://127.0.0.1:{WEB_PORT}/admin/login/"),
            ),
            (
                "feed",
                feed_command(f"0.0.0.0:{FEED_PORT}"),
                lambda: http_ok(f"http://127.0.0.1:{FEED_PORT}/routers/v1/changes"),
            ),
            ("haproxy", haproxy_command(), lambda: haproxy_ready(ROUTER_PORT)),
            ("edge", edge_command(router_token), None),
            ("worker", worker_command("worker"), None),
            ("beat", beat_command(str(STATE / "celerybeat-schedule")), None),
            (
                "flower",
                flower_command(FLOWER_PORT, env["FLOWER_BASIC_AUTH"]),
                lambda: tcp_open("127.0.0.1", FLOWER_PORT),
            ),
        ]
        for name, argv, ready in specs:
            process = ManagedProcess(name, argv, logs, env=dict(os.environ)).start()
            processes.append(process)
            if ready is not None:
                process.wait_until(ready, timeout=60, what="answering")
        edge = next(process for process in processes if process.name == "edge")
        edge.wait_until(lambda: "the router serves" in edge.log_since_start(), 60, "serving")
        worker = next(process for process in processes if process.name == "worker")
        worker.wait_until(lambda: "ready." in worker.log_since_start(), 60, "ready")
    except ProcessFailed as exc:
        say(str(exc))
        stop_all()

    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    say("the stack is up:")
    admin_user, admin_password = env["DJANGO_SUPERUSER_USERNAME"], env["DJANGO_SUPERUSER_PASSWORD"]
    lines = [
        f"  Overview  http://localhost:{WEB_PORT}/admin/  (the operators' overview, the admin's home)"
        f"  user {admin_user}  password {admin_password}",
        f"  Domains   http://localhost:{WEB_PORT}/apps/{demo_app.name}/domains/"
        "  (the demo app's Domains tab, as its customer sees it; same user)",
        f"  Health    http://localhost:{WEB_PORT}/healthz",
        f"  Metrics   http://localhost:{WEB_PORT}/metrics",
        f"  API       http://localhost:{WEB_PORT}/api/v1/  (token {api_token[:16]}..., whole in .env)",
        f"  API docs  http://localhost:{WEB_PORT}/api/docs/",
        f"  Router    HAProxy https://localhost:{ROUTER_PORT}/ and http://localhost:{ROUTER_HTTP_PORT}/,"
        f" driven by the edge agent (store {shown(EDGE_DIR / 'store')}; `certwright-edge status"
        f" --store {shown(EDGE_DIR / 'store')}`)",
        f"  Feed      http://localhost:{FEED_PORT}/routers/v1/changes  (the routers' long-poll and snapshot)",
        "  CLI       ./certwright --app demo domains  (from any directory; .venv/bin/certwright too;"
        " URL and token from .env)",
        "  Customer  make manage ARGS='customer create NAME'  (a customer and their API token, printed once)",
        f"  Flower    http://localhost:{FLOWER_PORT}/  user {user}  password {password}",
        f"  Pebble    {pebble.directory_url}  (its listener's CA: {shown(env['ACME_CA_BUNDLE'])})",
        f"  Mock DNS  DNS 127.0.0.1:{PEBBLE_PORTS['dns']}, management http://127.0.0.1:{PEBBLE_PORTS['challtestsrv']}"
        " (apps' hostnames and CNAME targets at their region's ingress)",
        f"  Mail      http://localhost:{MAIL_PAGE_PORT}/  (what Certwright mailed, through the SMTP sink on"
        f" 127.0.0.1:{SMTP_PORT}; .eml files in {shown(STATE / 'mail')}/; printed here as they arrive)",
        f"  Webhooks  {receiver.url}  (endpoint {demo_endpoint.pk} of app demo; the demo receiver verifies"
        " each signature and prints each event here)",
        f"  Logs      {shown(logs)}/",
        f"  Settings  {shown(ENV_FILE)} (generated secrets; the environment overrides it)",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n" + "\n".join(lines) + "\n", flush=True)
    if run_demo(platform_dns, env["DJANGO_SUPERUSER_USERNAME"], say) and router_serves_demo(roots):
        say(
            f"demo: see it served over TLS: curl --cacert {shown(roots)} "
            f"--resolve www.example.com:{ROUTER_PORT}:127.0.0.1 https://www.example.com:{ROUTER_PORT}/"
        )
    while True:
        time.sleep(1)
        for process in processes:
            if not process.alive():
                say(f"{process.name} exited:\n{process.log_tail()}")
                stop_all()


def ensure_api_token(username: str) -> str:
    """An API token of the admin user for the CLI, kept in `.env` with the API's URL; a new one
    when the saved one no longer works (a fresh database, or revoked)."""
    from django.contrib.auth import get_user_model

    from api.tokens import check_token, create_token

    saved = read_env_file(ENV_FILE)
    url = f"http://localhost:{WEB_PORT}"
    token = saved.get("CERTWRIGHT_API_TOKEN", "")
    if token and check_token(token) and saved.get("CERTWRIGHT_API_URL") == url:
        return token
    if not (token and check_token(token)):
        _, token = create_token(get_user_model().objects.get(username=username), "make run (CLI)")
    kept = [
        line
        for line in ENV_FILE.read_text().splitlines()
        if not line.startswith(("CERTWRIGHT_API_TOKEN=", "CERTWRIGHT_API_URL="))
    ]
    kept += [f"CERTWRIGHT_API_URL={url}", f"CERTWRIGHT_API_TOKEN={token}"]
    ENV_FILE.write_text("\n".join(kept) + "\n")
    return token


EDGE_DIR = STATE / "edge"
HAPROXY_DIR = STATE / "haproxy"


def _haproxy_socket() -> Path:
    """The runtime API's socket; under /tmp when the state directory's path is too long for one."""
    path = HAPROXY_DIR / "admin.sock"
    if len(str(path)) > 100:
        digest = hashlib.sha256(str(STATE).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"certwright-haproxy-{digest}.sock"
    return path


def haproxy_command() -> list[str]:
    """HAProxy from the configuration Certwright ships (edge/haproxy_config.py) on the router ports,
    HTTP-01 on its port 80 (here ROUTER_HTTP_PORT) passed to the web; the crt-list and PEMs kept in
    the state directory, so a second run starts with what the first served."""
    from edge.haproxy_config import render_config

    (HAPROXY_DIR / "certs").mkdir(parents=True, exist_ok=True)
    crt_list = HAPROXY_DIR / "crt-list"
    crt_list.touch()
    config = HAPROXY_DIR / "haproxy.cfg"
    config.write_text(
        render_config(
            socket_path=str(_haproxy_socket()),
            crt_list=str(crt_list),
            web_servers=[f"127.0.0.1:{WEB_PORT}"],
            https_bind=f"0.0.0.0:{ROUTER_PORT}",
            http_bind=f"0.0.0.0:{ROUTER_HTTP_PORT}",
        )
    )
    return ["/usr/sbin/haproxy", "-db", "-f", str(config)]


def haproxy_ready(port: int) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(_haproxy_socket()))
    except OSError:
        return False
    return tcp_open("127.0.0.1", port)


def edge_command(token: str) -> list[str]:
    """The edge agent (certwright-edge) on the feed service, driving HAProxy; its token in a file of
    mode 0600, never on the command line."""
    EDGE_DIR.mkdir(parents=True, exist_ok=True)
    token_file = EDGE_DIR / "token"
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return [
        PYTHON,
        "-m",
        "edge.main",
        "run",
        "--url",
        f"http://127.0.0.1:{FEED_PORT}",
        "--token-file",
        str(token_file),
        "--store",
        str(EDGE_DIR / "store"),
        "--driver",
        "haproxy",
        "--haproxy-socket",
        str(_haproxy_socket()),
        "--haproxy-crt-list",
        str(HAPROXY_DIR / "crt-list"),
        "--haproxy-cert-dir",
        str(HAPROXY_DIR / "certs"),
    ]


def router_serves_demo(roots: Path, timeout: float = 15) -> bool:
    """Waits until HAProxy presents the demo's served certificate (the agent applies it within a
    second of the commit), verified against the trusted roots."""
    from certificates.serving import served_certificate
    from devstack.demo import DEMO_DOMAIN

    wanted = served_certificate(DEMO_DOMAIN)
    context = ssl.create_default_context(cafile=str(roots))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", ROUTER_PORT), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=DEMO_DOMAIN) as tls:
                    presented = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            if wanted is not None and presented == wanted.fingerprint_sha256:
                say(f"demo: HAProxy serves it (fingerprint {presented[:16]}...)")
                return True
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    say(f"demo: HAProxy did not serve {DEMO_DOMAIN}'s certificate within {timeout:.0f} s; see the logs")
    return False


def ensure_router_token() -> str:
    """A token for the demo router's edge agent, kept in `.env`; a new one when the saved one no
    longer works."""
    from api.routers import create_router_token
    from api.tokens import check_token

    saved = read_env_file(ENV_FILE).get("CERTWRIGHT_ROUTER_TOKEN", "")
    if saved and check_token(saved):
        return saved
    token = create_router_token("make run (edge agent)")
    kept = [
        line for line in ENV_FILE.read_text().splitlines() if not line.startswith("CERTWRIGHT_ROUTER_TOKEN=")
    ]
    ENV_FILE.write_text("\n".join([*kept, f"CERTWRIGHT_ROUTER_TOKEN={token}"]) + "\n")
    return token


def manage_command(args: list[str]) -> int:
    """`python -m devstack manage ARGS...`: manage.py with `make run`'s environment (its database,
    Redis, Pebble and secrets from `.env`), for the operator commands while the stack runs."""
    os.environ.update(development_environment())
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=dict(os.environ), check=False
    ).returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["manage"]:
        sys.exit(manage_command(sys.argv[2:]))
    sys.exit(main())
