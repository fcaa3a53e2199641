"""The Docker development stack (docker/): checked by reading, since no Docker engine runs here.

`docker-compose config` (Debian's Compose 1.29) validates and resolves docker/compose.yml without an
engine; the tests then read the resolved configuration, Pebble's JSON config and the Dockerfiles.
No database and no Django: these tests only read files and run `docker-compose config`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import posixpath
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yml"
APP_DOCKERFILE = DOCKER_DIR / "Dockerfile"
PEBBLE_DOCKERFILE = DOCKER_DIR / "pebble.Dockerfile"
PEBBLE_CONFIG = DOCKER_DIR / "pebble-config.json"
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")

# The processes that run Certwright's code, from the one image built from docker/Dockerfile.
APP_SERVICES = ("web", "feed", "worker", "beat", "flower")
# Every process that imports config.settings, so needs every required variable.
SETTINGS_SERVICES = (*APP_SERVICES, "migrate")
ALL_SERVICES = (*APP_SERVICES, "migrate", "postgres", "redis", "pebble", "challtestsrv")

# What config/settings.py refuses to start without (DEBUG is off in compose.env), plus ACME_CA_BUNDLE,
# without which the app cannot trust Pebble's HTTPS listener.
REQUIRED_SETTINGS = (
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "QUOTA_REDIS_URL",
    "ACME_DIRECTORY_URL",
    "ACME_CA_BUNDLE",
    "DNS_RESOLVERS",
    "KEY_ENCRYPTION_KEYS",
)

NINETY_DAYS_IN_SECONDS = 90 * 24 * 3600

requires_docker_compose = pytest.mark.skipif(
    not DOCKER_COMPOSE.exists(),
    reason=f"{DOCKER_COMPOSE} is absent: install Debian's docker-compose package (`.ci/run` installs it)",
)


def _run_compose_config() -> subprocess.CompletedProcess[str]:
    # The host's COMPOSE_*/DOCKER_* variables (COMPOSE_FILE, COMPOSE_PROJECT_NAME...) must not change
    # what is validated.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(COMPOSE_FILE.relative_to(ROOT)), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    """The configuration as Compose resolved it (anchors merged, env_file read into environment)."""
    if not DOCKER_COMPOSE.exists():
        pytest.skip(f"{DOCKER_COMPOSE} is absent: install Debian's docker-compose package")
    result = _run_compose_config()
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def _argv(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value or []]


def _option(argv: list[str], name: str) -> str:
    """The value of `name value` or `name=value` in an argument vector."""
    for index, arg in enumerate(argv):
        if arg == name:
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def _fixed_ipv4(service: dict) -> str:
    networks = service.get("networks") or {}
    addresses = [net["ipv4_address"] for net in networks.values() if net and net.get("ipv4_address")]
    assert len(addresses) == 1, f"expected one fixed IPv4 address, found {addresses}"
    return addresses[0]


def _volume_mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume, for the service's named-volume mounts."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[target] = source
    return mounts


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


# -- (a) Compose accepts the file ---------------------------------------------------------------------


@requires_docker_compose
def test_docker_compose_config_accepts_the_compose_file():
    result = _run_compose_config()
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


# -- (b) the resolved configuration ---------------------------------------------------------------------


def test_compose_defines_the_app_processes_the_one_shot_migration_and_every_backing_service(services):
    missing = sorted(set(ALL_SERVICES) - set(services))
    assert not missing, f"services missing from docker/compose.yml: {missing}"


def test_beat_runs_a_leader_and_a_standby(services):
    beat = services["beat"]
    replicas = (beat.get("deploy") or {}).get("replicas", 1)
    assert replicas == 2, "one beat leads and sends, the other takes over when it dies"


def test_web_worker_beat_and_flower_run_one_image_built_from_docker_dockerfile(services):
    builds = {name: services[name].get("build") for name in (*APP_SERVICES, "migrate")}
    for name, build in builds.items():
        assert build, f"{name} has no build section"
        assert Path(build["context"]).resolve() == ROOT, f"{name} must build from the repository root"
        assert build.get("dockerfile") == "docker/Dockerfile", f"{name} builds from {build.get('dockerfile')}"
    images = {services[name].get("image") for name in (*APP_SERVICES, "migrate")}
    assert len(images) == 1 and None not in images, f"the app services use different images: {images}"


@pytest.mark.parametrize("service_name", SETTINGS_SERVICES)
def test_every_process_that_loads_the_settings_gets_every_required_variable(services, service_name):
    env = _environment(services[service_name])
    missing = [name for name in REQUIRED_SETTINGS if not env.get(name)]
    assert not missing, f"{service_name} lacks {missing}"


def test_required_variables_list_covers_every_variable_the_settings_mark_required():
    # Keeps REQUIRED_SETTINGS (and so compose.env) in step when settings.py requires a new variable.
    settings_text = (ROOT / "config" / "settings.py").read_text()
    marked = set(
        re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]*)"(?:[^()]|\([^()]*\))*?required=True', settings_text)
    )
    marked |= set(re.findall(r'env\.fernet_keys\(\s*"([A-Z][A-Z0-9_]*)"', settings_text))
    assert marked, "found no required variable in config/settings.py: has its style changed?"
    assert marked <= set(REQUIRED_SETTINGS), (
        f"required but not checked here: {marked - set(REQUIRED_SETTINGS)}"
    )
    for name in REQUIRED_SETTINGS:
        assert f'"{name}"' in settings_text, f"config/settings.py no longer reads {name}"


def test_compose_environment_passes_the_settings_validation_rules(services):
    env = _environment(services["web"])
    assert env["DEBUG"].lower() in {"0", "false", "no", "off"}, "compose runs with DEBUG off"
    assert len(env["SECRET_KEY"]) >= 32
    assert env["DATABASE_URL"].startswith("postgres://")
    assert env["CELERY_BROKER_URL"].startswith("redis://")
    assert env["QUOTA_REDIS_URL"].startswith("redis://")
    assert env["ACME_DIRECTORY_URL"].startswith("https://pebble:14000/")
    assert "@" in env["ACME_CONTACT_EMAIL"]
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    assert user and password
    for key in env["KEY_ENCRYPTION_KEYS"].split(","):
        assert len(base64.urlsafe_b64decode(key.strip())) == 32, "not a Fernet key"
    assert "127.0.0.1" in env["ALLOWED_HOSTS"].split(","), "web's healthcheck asks 127.0.0.1"


def test_dns_resolvers_is_challtestsrv_fixed_address_and_dns_port(services):
    challtestsrv = services["challtestsrv"]
    address = _fixed_ipv4(challtestsrv)
    dns_port = _option(_argv(challtestsrv["command"]), "-dns01").rsplit(":", 1)[1]
    for name in SETTINGS_SERVICES:
        resolvers = _environment(services[name])["DNS_RESOLVERS"].split(",")
        host, port = resolvers[0].strip().rsplit(":", 1)
        ipaddress.ip_address(host)  # dnspython takes nameserver addresses, not names
        assert (host, port) == (address, dns_port), f"{name} resolves through {resolvers[0]}"


def test_pebble_resolves_domains_through_challtestsrv(services):
    address = _fixed_ipv4(services["challtestsrv"])
    dns_port = _option(_argv(services["challtestsrv"]["command"]), "-dns01").rsplit(":", 1)[1]
    pebble_argv = _argv(services["pebble"]["command"])
    assert _option(pebble_argv, "-dnsserver") == f"{address}:{dns_port}"
    assert "-strict=false" in pebble_argv
    assert _environment(services["pebble"]).get("PEBBLE_VA_NOSLEEP") == "1"


def test_challtestsrv_sends_every_unknown_name_to_web_for_http01(compose, services):
    web_address = _fixed_ipv4(services["web"])
    argv = _argv(services["challtestsrv"]["command"])
    assert _option(argv, "-defaultIPv4") == web_address
    assert _option(argv, "-defaultIPv6") == ""
    for challenge_server in ("-http01", "-https01", "-tlsalpn01"):
        assert _option(argv, challenge_server) == "", f"challtestsrv must not serve {challenge_server}"
    subnets = [
        ipaddress.ip_network(pool["subnet"])
        for network in compose["networks"].values()
        for pool in ((network or {}).get("ipam") or {}).get("config") or []
    ]
    fixed = [ipaddress.ip_address(web_address), ipaddress.ip_address(_fixed_ipv4(services["challtestsrv"]))]
    assert all(any(ip in subnet for subnet in subnets) for ip in fixed), "fixed addresses outside the subnet"
    assert "8000" in " ".join(_argv(services["web"]["command"])), "gunicorn must listen on Pebble's httpPort"


def test_acme_ca_bundle_is_read_from_the_volume_pebble_publishes(services):
    pebble_mounts = _volume_mounts(services["pebble"])
    for name in SETTINGS_SERVICES:
        bundle = _environment(services[name])["ACME_CA_BUNDLE"]
        directory = posixpath.dirname(bundle)
        volume = _volume_mounts(services[name]).get(directory)
        assert volume, f"{name} does not mount {directory}"
        assert pebble_mounts.get(directory) == volume, f"pebble does not publish its CA into {volume}"
    assert "/var/lib/pebble-ca/ca.pem" in (DOCKER_DIR / "pebble-entrypoint.sh").read_text()


def test_web_worker_and_beat_start_only_after_migrate_succeeded(services):
    migrate = services["migrate"]
    assert _argv(migrate["command"])[-3:] == ["manage.py", "migrate", "--noinput"]
    assert migrate.get("restart") in (None, "no")
    for name in ("web", "worker", "beat"):
        condition = (services[name].get("depends_on") or {}).get("migrate", {}).get("condition")
        assert condition == "service_completed_successfully", f"{name} does not wait for migrate"


def test_worker_consumes_the_dns_acme_and_default_queues(services):
    argv = _argv(services["worker"]["command"])
    assert argv[:4] == ["celery", "-A", "config", "worker"]
    queues = {queue.strip() for queue in _option(argv, "-Q").split(",")}
    assert {"dns", "acme", "default"} <= queues


def test_web_runs_gunicorn_and_its_healthcheck_asks_healthz(services):
    web = services["web"]
    argv = _argv(web["command"])
    assert argv[:2] == ["gunicorn", "config.wsgi:application"]
    assert _option(argv, "--bind") == "0.0.0.0:8000"
    check = " ".join(_argv(web["healthcheck"]["test"]))
    assert "http://127.0.0.1:8000/healthz" in check
    assert "urllib" in check, "the slim image has no curl"


def test_feed_runs_the_asgi_app_under_gunicorns_asgi_worker_after_migrate(services):
    feed = services["feed"]
    argv = _argv(feed["command"])
    assert argv[:2] == ["gunicorn", "config.asgi:application"] and _option(argv, "-k") == "asgi"
    assert (feed.get("depends_on") or {}).get("migrate", {}).get("condition") == (
        "service_completed_successfully"
    )


def test_beat_and_flower_run_celery_beat_and_flower_with_basic_auth(services):
    assert _argv(services["beat"]["command"])[:4] == ["celery", "-A", "config", "beat"]
    flower = " ".join(_argv(services["flower"]["command"]))
    assert "celery -A config flower --port=5555" in flower
    # `$$` in the file: the container's shell expands it, not Compose from the host's environment.
    assert "--basic-auth=" in flower and "FLOWER_BASIC_AUTH" in flower


def test_backing_services_have_healthchecks_and_postgres_keeps_its_data_in_a_named_volume(compose, services):
    for name in ("web", "postgres", "redis", "pebble", "challtestsrv"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(_argv(services["postgres"]["healthcheck"]["test"]))
    assert services["postgres"]["image"] == "postgres:15"
    mounts = _volume_mounts(services["postgres"])
    assert mounts.get("/var/lib/postgresql/data") in compose["volumes"]


def test_redis_keeps_nothing_on_disk(services):
    redis_service = services["redis"]
    assert redis_service["image"] == "redis:7"
    argv = _argv(redis_service["command"])
    assert _option(argv, "--save") == ""
    assert _option(argv, "--appendonly") == "no"


def test_long_running_services_restart_and_migrate_does_not(services):
    for name in ALL_SERVICES:
        if name != "migrate":
            assert services[name].get("restart") in ("unless-stopped", "always"), f"{name} never restarts"
    assert services["migrate"].get("restart") in (None, "no"), "a one-shot migration must not loop"


def test_pebble_config_validates_http01_on_port_8000_and_issues_90_day_certificates():
    config = json.loads(PEBBLE_CONFIG.read_text())["pebble"]
    assert config["httpPort"] == 8000
    assert config["certificateValidityPeriod"] == NINETY_DAYS_IN_SECONDS == 7776000
    assert config["listenAddress"] == "0.0.0.0:14000"
    assert config["managementListenAddress"] == "0.0.0.0:15000"
    assert config["tlsPort"] == 5001
    assert config["ocspResponderURL"] == ""
    assert config["externalAccountBindingRequired"] is False


def test_pebble_image_installs_debians_package_and_generates_the_listener_certificate(services):
    instructions = dockerfile_instructions(PEBBLE_DOCKERFILE)
    assert instructions[0] == ("FROM", "debian:bookworm-slim")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "apt-get install -y" in runs and " pebble " in f"{runs} "
    assert "openssl req -x509" in runs
    assert "DNS:pebble" in runs and "DNS:localhost" in runs
    config = json.loads(PEBBLE_CONFIG.read_text())["pebble"]
    for path in (config["certificate"], config["privateKey"], "/etc/pebble/tls/ca.pem"):
        assert posixpath.basename(path) in runs, f"the build does not generate {path}"
        assert path.startswith("/etc/pebble/tls/")
    copies = [arguments.split() for keyword, arguments in instructions if keyword == "COPY"]
    config_destinations = [args[-1] for args in copies if "pebble-config.json" in args[:-1]]
    assert config_destinations == [_option(_argv(services["pebble"]["command"]), "-config")]
    for name in ("pebble", "challtestsrv"):
        assert Path(services[name]["build"]["context"]).resolve() == DOCKER_DIR
        assert services[name]["build"]["dockerfile"] == "pebble.Dockerfile"


# -- (c) the application image --------------------------------------------------------------------------


def test_dockerfile_copies_requirements_txt_and_installs_it_with_pip():
    instructions = dockerfile_instructions(APP_DOCKERFILE)
    copy_index, destination = next(
        (index, arguments.split()[-1])
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "COPY" and "requirements.txt" in arguments.split()[:-1]
    )
    if destination.endswith("/"):
        destination += "requirements.txt"
    installs = [
        index
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "RUN"
        and "pip install" in arguments
        and re.search(rf"(-r|--requirement)[ =]{re.escape(destination)}(\s|$)", arguments)
    ]
    assert installs, f"no `pip install -r {destination}` in docker/Dockerfile"
    assert installs[0] > copy_index


def test_dockerfile_runs_as_non_root_on_python_311_and_collects_static_files():
    instructions = dockerfile_instructions(APP_DOCKERFILE)
    text = APP_DOCKERFILE.read_text()
    assert "python:3.11-slim-bookworm" in text
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    envs = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "manage.py collectstatic --noinput" in runs
    cmd = json.loads(next(arguments for keyword, arguments in reversed(instructions) if keyword == "CMD"))
    assert cmd[:2] == ["gunicorn", "config.wsgi:application"]


def test_no_docker_file_names_a_registry_host():
    # Images are named plainly (python:3.11-slim-bookworm, postgres:15...); the host is the engine's
    # business, not this repository's.
    images = []
    for path in (APP_DOCKERFILE, PEBBLE_DOCKERFILE):
        text = path.read_text()
        images += re.findall(
            r"^\s*(?:FROM|ARG\s+\w*IMAGE\w*=)\s*(\S+)", text, flags=re.MULTILINE | re.IGNORECASE
        )
    images += re.findall(r"^\s*image:\s*(\S+)", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    assert images
    for image in images:
        first = image.split("/")[0]
        if "/" in image:
            assert not ("." in first or ":" in first or first == "localhost"), (
                f"{image} names a registry host"
            )
