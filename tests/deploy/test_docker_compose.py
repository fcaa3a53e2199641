"""The Docker development stack (docker/), checked by reading: its wiring, in seconds, in `make test`.

`docker-compose config` (Debian's Compose 1.29) validates and resolves docker/compose.yml without an
engine; the tests then read the resolved configuration, Pebble's JSON config, the Dockerfiles and the
build-context rules. No database and no Django. `make docker-test` (devstack/docker_test.py) builds
the images and runs the stack for real; it needs a Docker engine and takes minutes, so it is a CI
step of its own rather than part of this suite.
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

from devstack import docker_images
from devstack.compose_demo import EDGE_ADDRESS

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yml"
APP_DOCKERFILE = DOCKER_DIR / "Dockerfile"
PEBBLE_DOCKERFILE = DOCKER_DIR / "pebble.Dockerfile"
DOCKERFILES = sorted(DOCKER_DIR.glob("*Dockerfile"))
PEBBLE_CONFIG = DOCKER_DIR / "pebble-config.json"
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")

# The processes that run Certwright's code, from the one image built from docker/Dockerfile.
APP_SERVICES = ("web", "feed", "worker", "beat", "flower")
# Every process that imports config.settings, so needs every required variable.
SETTINGS_SERVICES = (*APP_SERVICES, "migrate")
ONE_SHOT_SERVICES = ("migrate", "router-token")
ALL_SERVICES = (*APP_SERVICES, *ONE_SHOT_SERVICES, "edge", "postgres", "redis", "pebble", "challtestsrv")

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


def _published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port, as `config` prints them
    (`127.0.0.1:8443:443/tcp`) or in the long syntax."""
    published = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            published.append((host_ip, parts[-2] if len(parts) > 1 else "", parts[-1]))
    return published


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
    builds = {name: services[name].get("build") for name in (*APP_SERVICES, *ONE_SHOT_SERVICES)}
    for name, build in builds.items():
        assert build, f"{name} has no build section"
        assert Path(build["context"]).resolve() == ROOT, f"{name} must build from the repository root"
        assert build.get("dockerfile") == "docker/Dockerfile", f"{name} builds from {build.get('dockerfile')}"
    images = {services[name].get("image") for name in (*APP_SERVICES, *ONE_SHOT_SERVICES)}
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


def test_challtestsrv_sends_every_unknown_name_to_the_edge_which_passes_http01_to_web(compose, services):
    edge = services["edge"]
    edge_address = _fixed_ipv4(edge)
    argv = _argv(services["challtestsrv"]["command"])
    assert _option(argv, "-defaultIPv4") == edge_address
    assert _option(argv, "-defaultIPv6") == ""
    for challenge_server in ("-http01", "-https01", "-tlsalpn01"):
        assert _option(argv, challenge_server) == "", f"challtestsrv must not serve {challenge_server}"
    subnets = [
        ipaddress.ip_network(pool["subnet"])
        for network in compose["networks"].values()
        for pool in ((network or {}).get("ipam") or {}).get("config") or []
    ]
    fixed = [_fixed_ipv4(services[name]) for name in ("web", "edge", "challtestsrv")]
    assert all(any(ipaddress.ip_address(ip) in subnet for subnet in subnets) for ip in fixed), (
        "fixed addresses outside the subnet"
    )
    assert len(set(fixed)) == len(fixed)
    # Pebble's HTTP-01 requests go to port 80 of the edge, whose HAProxy passes them to gunicorn.
    assert json.loads(PEBBLE_CONFIG.read_text())["pebble"]["httpPort"] == 80
    assert {target for _, _, target in _published(edge)} >= {"80", "443"}
    web_host, web_port = _environment(edge)["CERTWRIGHT_WEB"].rsplit(":", 1)
    assert web_host == "web" and web_port in " ".join(_argv(services["web"]["command"]))
    # The demo puts its region's ingress at the edge.
    assert edge_address == EDGE_ADDRESS


def test_the_edge_follows_the_feed_with_the_token_the_one_shot_router_token_service_writes(services):
    edge = services["edge"]
    env = _environment(edge)
    assert env["CERTWRIGHT_FEED_URL"] == "http://feed:8001"
    assert "0.0.0.0:8001" in _argv(services["feed"]["command"])
    token_file = env["CERTWRIGHT_EDGE_TOKEN_FILE"]
    token_volume = _volume_mounts(edge)[posixpath.dirname(token_file)]
    assert _volume_mounts(services["router-token"])[posixpath.dirname(token_file)] == token_volume
    script = " ".join(_argv(services["router-token"]["command"]))
    assert "manage.py router_token create" in script and "umask 077" in script
    assert f"token={token_file};" in script
    assert edge["depends_on"]["router-token"]["condition"] == "service_completed_successfully"
    entrypoint = (DOCKER_DIR / "edge-entrypoint.sh").read_text()
    assert "certwright-edge haproxy-config" in entrypoint and "exec certwright-edge run" in entrypoint
    assert "--driver haproxy" in entrypoint


def test_acme_ca_bundle_and_trusted_roots_are_read_from_the_volume_pebble_publishes(services):
    pebble_mounts = _volume_mounts(services["pebble"])
    entrypoint = (DOCKER_DIR / "pebble-entrypoint.sh").read_text()
    for name in SETTINGS_SERVICES:
        env = _environment(services[name])
        for variable in ("ACME_CA_BUNDLE", "EXTRA_TRUSTED_ROOTS"):
            directory, filename = posixpath.split(env[variable])
            volume = _volume_mounts(services[name]).get(directory)
            assert volume, f"{name} does not mount {directory}"
            assert pebble_mounts.get(directory) == volume, f"pebble does not publish into {volume}"
            assert f"shared={directory}" in entrypoint and f'"$shared/{filename}"' in entrypoint


def test_web_worker_and_beat_start_only_after_migrate_succeeded(services):
    migrate = services["migrate"]
    script = " ".join(_argv(migrate["command"]))
    assert script.index("manage.py migrate --noinput") < script.index("manage.py ensure_superuser")
    assert "&&" in script, "the admin user is created only after the migrations succeeded"
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
    for name in ("web", "flower", "edge", "postgres", "redis", "pebble", "challtestsrv"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(_argv(services["postgres"]["healthcheck"]["test"]))
    assert services["postgres"]["build"]["dockerfile"] == "postgres.Dockerfile"
    assert "postgresql-15" in docker_images.BASE_PACKAGES
    mounts = _volume_mounts(services["postgres"])
    assert mounts.get("/var/lib/postgresql/data") in compose["volumes"]


def test_redis_keeps_nothing_on_disk(services):
    redis_service = services["redis"]
    assert redis_service["build"]["dockerfile"] == "redis.Dockerfile"
    argv = _argv(redis_service["command"])
    assert _option(argv, "--save") == ""
    assert _option(argv, "--appendonly") == "no"


def test_long_running_services_restart_and_migrate_does_not(services):
    for name in ALL_SERVICES:
        if name not in ONE_SHOT_SERVICES:
            assert services[name].get("restart") in ("unless-stopped", "always"), f"{name} never restarts"
    for name in ONE_SHOT_SERVICES:
        assert services[name].get("restart") in (None, "no"), f"the one-shot {name} must not loop"


def test_pebble_config_validates_http01_on_port_80_and_issues_90_day_certificates():
    config = json.loads(PEBBLE_CONFIG.read_text())["pebble"]
    assert config["httpPort"] == 80
    assert config["certificateValidityPeriod"] == NINETY_DAYS_IN_SECONDS == 7776000
    assert config["listenAddress"] == "0.0.0.0:14000"
    assert config["managementListenAddress"] == "0.0.0.0:15000"
    assert config["tlsPort"] == 5001
    assert config["ocspResponderURL"] == ""
    assert config["externalAccountBindingRequired"] is False


def test_pebble_image_has_debians_package_and_generates_the_listener_certificate(services):
    instructions = dockerfile_instructions(PEBBLE_DOCKERFILE)
    assert {"pebble", "openssl", "curl"} <= set(docker_images.BASE_PACKAGES)
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
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


def test_dockerfile_runs_as_non_root_on_debians_python_and_collects_static_files():
    instructions = dockerfile_instructions(APP_DOCKERFILE)
    assert {"python3", "python3-venv"} <= set(docker_images.BASE_PACKAGES)
    assert docker_images.SUITE == "bookworm", "bookworm's python3 is 3.11, the version the wheels are for"
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    envs = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "manage.py collectstatic --noinput" in runs
    cmd = json.loads(next(arguments for keyword, arguments in reversed(instructions) if keyword == "CMD"))
    assert cmd[:2] == ["gunicorn", "config.wsgi:application"]


def test_every_image_is_built_here_from_the_debootstrap_base_and_none_is_pulled(services):
    # No registry can be reached: every FROM is the base image `docker import`ed from debootstrap (or
    # a stage of the same file), and every service's image is one a build section of this file makes.
    for path in DOCKERFILES:
        instructions = dockerfile_instructions(path)
        stages = {
            arguments.split()[-1]
            for keyword, arguments in instructions
            if keyword == "FROM" and " AS " in arguments
        }
        defaults = dict(
            arguments.split("=", 1)
            for keyword, arguments in instructions
            if keyword == "ARG" and "=" in arguments
        )
        for keyword, arguments in instructions:
            if keyword == "FROM":
                image = arguments.split()[0]
                image = defaults.get(image.strip("${}"), image)
                assert image == docker_images.BASE_IMAGE or image in stages, f"{path.name} pulls {image}"
    built = {service["image"] for service in services.values() if service.get("build")}
    for name, service in services.items():
        assert service["image"] in built, f"{name} runs {service['image']}, which nothing here builds"
    assert {image for image, _, _ in docker_images.IMAGES} == built


def test_no_dockerfile_asks_buildkit_for_a_frontend_and_builds_use_no_network(services):
    # A `# syntax=` line makes BuildKit pull its frontend from a registry.
    for path in DOCKERFILES:
        first_lines = path.read_text().splitlines()[:5]
        assert not any(line.lower().startswith("# syntax") for line in first_lines), path.name
    for name, service in services.items():
        assert service["build"].get("network") == "none", f"{name}'s build could reach a network"
    assert docker_images.BUILDER_ENVIRONMENT["DOCKER_BUILDKIT"] == "0"


def test_root_dockerignore_keeps_the_hosts_state_out_and_lets_the_wheels_in():
    # The classic builder reads only a .dockerignore at the context's root (the repository's).
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".run", ".git", ".env", "docker/compose.env"} <= set(rules)
    assert rules.index("build") < rules.index("!build/wheels") < rules.index("!build/project"), (
        "the wheels must be let back in after build/"
    )
    assert not (DOCKER_DIR / "Dockerfile.dockerignore").exists(), "a BuildKit-only file the builder ignores"


def test_ports_are_published_on_loopback_only(services):
    published = {name: _published(service) for name, service in services.items()}
    assert published["edge"] and published["web"]
    for name, ports in published.items():
        for host_ip, _, target in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {target} on {host_ip or 'every address'}"


def test_no_docker_file_names_a_registry_host():
    # Images are named plainly (certwright-base:bookworm...); a host is the engine's business, not this
    # repository's.
    images = []
    for path in DOCKERFILES:
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
