"""`make docker-test`: the container stack of docker/compose.yml, built and run for real.

1. A Docker engine: the running one, or `dockerd` started here (stopped at the end by its PID).
2. The images (devstack/docker_images.py: debootstrap base, host-built wheels, no registry).
3. `docker-compose -p certwright-test -f docker/compose.yml up -d` on free host ports (127.0.0.1
   only), then waits for web, Flower and the edge to report healthy.
4. The demo certificate (devstack/compose_demo.py in the web container), as the README's deployment
   section tells an operator.
5. A TLS client through the edge (HAProxy driven by certwright-edge): SNI www.example.com, the chain
   verified against Pebble's root fetched from Pebble's management API (/roots/0, itself verified
   against Pebble's listener CA), the leaf the one Certwright serves; a name nobody serves is refused.
6. `down -v` (containers, network, volumes), always, and dockerd stopped if it was started here.

Exit status 0 when every check passed. Progress lines start with [docker-test], with timings.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack import docker_images
from devstack.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ["docker-compose", "-p", "certwright-test", "-f", str(ROOT / "docker" / "compose.yml")]
STATE = ROOT / ".run" / "docker-test"
DEMO_DOMAIN = "www.example.com"
UNSERVED_DOMAIN = "nobody-serves-this.example.org"
# Host ports compose.yml publishes, by the variable that moves each (all on 127.0.0.1).
PORT_VARIABLES = (
    "CERTWRIGHT_WEB_PORT",
    "CERTWRIGHT_FEED_PORT",
    "CERTWRIGHT_FLOWER_PORT",
    "CERTWRIGHT_ROUTER_PORT",
    "CERTWRIGHT_ROUTER_HTTP_PORT",
    "CERTWRIGHT_PEBBLE_PORT",
    "CERTWRIGHT_PEBBLE_MANAGEMENT_PORT",
    "CERTWRIGHT_CHALLTESTSRV_PORT",
)
# The services whose healthcheck must pass before the demo (the worker's first check is a minute
# in; the demo's issuance proves it works).
HEALTHY_SERVICES = ("postgres", "redis", "pebble", "challtestsrv", "web", "flower", "edge")
STARTUP_TIMEOUT = 300
DOCKERD_TIMEOUT = 60


def say(message: str) -> None:
    print(f"[docker-test] {message}", flush=True)


class DockerTestFailed(RuntimeError):
    """A step failed; the message says which and what was seen."""


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def start_dockerd() -> subprocess.Popen | None:
    """None when an engine already answers; else a `dockerd` started here, once it answers."""
    if engine_answers():
        say("using the Docker engine already running")
        return None
    STATE.mkdir(parents=True, exist_ok=True)
    log = (STATE / "dockerd.log").open("ab")
    argv = ["dockerd"] if os.geteuid() == 0 else ["sudo", "dockerd"]
    dockerd = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + DOCKERD_TIMEOUT
    while not engine_answers():
        if dockerd.poll() is not None or time.monotonic() > deadline:
            stop_dockerd(dockerd)
            raise DockerTestFailed(f"dockerd did not start; see {STATE / 'dockerd.log'}")
        time.sleep(0.5)
    say(f"started dockerd (pid {dockerd.pid}, log {STATE.relative_to(ROOT) / 'dockerd.log'})")
    return dockerd


def stop_dockerd(dockerd: subprocess.Popen) -> None:
    """SIGTERM to dockerd's PID (it stops its containerd and containers), SIGKILL if it lingers."""
    if dockerd.poll() is None:
        dockerd.terminate()
        try:
            dockerd.wait(DOCKERD_TIMEOUT)
        except subprocess.TimeoutExpired:
            dockerd.kill()
            dockerd.wait(10)
    say(f"stopped dockerd (pid {dockerd.pid})")


def free_ports() -> dict[str, int]:
    """A distinct free port for each published port."""
    ports: dict[str, int] = {}
    while len(ports) < len(PORT_VARIABLES):
        port = free_port()
        if port not in ports.values():
            ports[PORT_VARIABLES[len(ports)]] = port
    return ports


def compose_environment(ports: dict[str, int]) -> dict[str, str]:
    # The host's COMPOSE_* variables (COMPOSE_FILE, COMPOSE_PROJECT_NAME...) must not change the stack.
    kept = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return {**kept, **docker_images.BUILDER_ENVIRONMENT, **{name: str(port) for name, port in ports.items()}}


def compose(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run([*COMPOSE, *args], env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise DockerTestFailed(f"docker-compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def health(env: dict[str, str], service: str) -> str:
    container = compose(env, "ps", "-q", service).strip()
    if not container:
        return "absent"
    result = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            container,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "absent"


def wait_healthy(env: dict[str, str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = list(HEALTHY_SERVICES)
    while pending:
        pending = [service for service in pending if health(env, service) != "running healthy"]
        if not pending:
            return
        if time.monotonic() > deadline:
            states = ", ".join(f"{service}: {health(env, service)}" for service in pending)
            raise DockerTestFailed(f"not healthy after {STARTUP_TIMEOUT} s: {states}")
        time.sleep(2)


def pebble_root(env: dict[str, str], management_port: int) -> str:
    """The root Pebble signs with, from its management API, over TLS verified against its listener CA
    (read from the pebble container)."""
    listener_ca = compose(env, "exec", "-T", "pebble", "cat", "/etc/pebble/tls/ca.pem")
    context = ssl.create_default_context(cadata=listener_ca)
    url = f"https://127.0.0.1:{management_port}/roots/0"
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read().decode()
    except OSError as exc:
        raise DockerTestFailed(f"Pebble's root could not be read from {url}: {exc}") from exc


def served_fingerprint(env: dict[str, str]) -> str:
    """The SHA-256 of the certificate Certwright serves for the demo domain, from its database."""
    code = (
        "from certificates.serving import served_certificate; "
        f"print(served_certificate({DEMO_DOMAIN!r}).fingerprint_sha256)"
    )
    return compose(env, "exec", "-T", "web", "python", "manage.py", "shell", "-v", "0", "-c", code).strip()


def tls_through_edge(root_pem: str, router_port: int, server_name: str) -> tuple[str, str]:
    """(the leaf's SHA-256, the HTTP answer) of a verifying TLS 1.2+ handshake and GET / at the edge."""
    context = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", router_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            leaf = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    return leaf, answer.decode(errors="replace")


class StackChecks:
    """The checks, in order, on one stack; each raises DockerTestFailed or says what it saw."""

    def __init__(self) -> None:
        self.ports = free_ports()
        self.env = compose_environment(self.ports)
        self.root_pem = ""

    def steps(self):
        return (
            ("the images build", self.build_images),
            ("the stack comes up healthy", self.start_stack),
            ("the demo certificate is issued", self.issue_demo),
            ("the edge serves it, verified against Pebble's root", self.check_served),
            ("the edge refuses a name nobody serves", self.check_unserved),
            ("two beats run: one leads, the other stands by", self.check_beats),
        )

    def build_images(self) -> None:
        docker_images.build_all()

    def start_stack(self) -> None:
        compose(self.env, "down", "-v", "--remove-orphans", check=False)
        compose(self.env, "up", "-d", "--no-build")
        say("docker-compose up -d: " + ", ".join(f"{name}={port}" for name, port in self.ports.items()))
        wait_healthy(self.env)
        say(f"healthy: {', '.join(HEALTHY_SERVICES)}")

    def issue_demo(self) -> None:
        demo = [*COMPOSE, "exec", "-T", "web", "python", "-m", "devstack.compose_demo"]
        if subprocess.run(demo, env=self.env, check=False).returncode != 0:
            raise DockerTestFailed("the demo certificate was not issued")

    def check_served(self) -> None:
        self.root_pem = pebble_root(self.env, self.ports["CERTWRIGHT_PEBBLE_MANAGEMENT_PORT"])
        wanted = served_fingerprint(self.env)
        # The agent applies a change within about a second of its commit: allow it a few.
        deadline = time.monotonic() + 30
        while True:
            try:
                leaf, answer = tls_through_edge(
                    self.root_pem, self.ports["CERTWRIGHT_ROUTER_PORT"], DEMO_DOMAIN
                )
                if leaf == wanted:
                    break
                problem = f"the edge presents {leaf[:16]}..., Certwright serves {wanted[:16]}..."
            except (OSError, ssl.SSLError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise DockerTestFailed(
                    f"no verifying handshake for {DEMO_DOMAIN} through the edge: {problem}"
                )
            time.sleep(0.5)
        if f"Hello from {DEMO_DOMAIN}" not in answer:
            raise DockerTestFailed(f"the edge's answer for {DEMO_DOMAIN} is not HAProxy's page:\n{answer}")
        say(f"{DEMO_DOMAIN} through the edge: chain verified, leaf {leaf[:16]}... as Certwright serves it")

    def check_unserved(self) -> None:
        try:
            tls_through_edge(self.root_pem, self.ports["CERTWRIGHT_ROUTER_PORT"], UNSERVED_DOMAIN)
        except ssl.SSLError as exc:
            say(f"{UNSERVED_DOMAIN} through the edge: refused ({exc.reason})")
        else:
            raise DockerTestFailed(
                f"the edge completed a handshake for {UNSERVED_DOMAIN}, which nobody serves"
            )

    def check_beats(self) -> None:
        beats = compose(self.env, "ps", "-q", "beat").split()
        if len(beats) != 2:
            raise DockerTestFailed(f"{len(beats)} beat container(s) run, not a leader and a standby")
        code = (
            "import json, urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=10).read().decode())"
        )
        # A standby stamps its heartbeat once it has found the other beat holding the lease.
        deadline = time.monotonic() + 60
        while True:
            answer = compose(self.env, "exec", "-T", "web", "python", "-c", code, check=False)
            try:
                checks = json.loads(answer)["checks"]
                leader, standby = checks["beat_leader"], checks["beat_standby"]
            except (ValueError, KeyError, TypeError):
                leader = standby = {"ok": False, "detail": f"no /healthz answer: {answer[:200]!r}"}
            if leader["ok"] and standby["ok"]:
                break
            if time.monotonic() > deadline:
                raise DockerTestFailed(f"beat_leader: {leader['detail']}; beat_standby: {standby['detail']}")
            time.sleep(2)
        say(f"/healthz: {leader['detail']}; standby {standby['detail']}")


def main() -> int:
    started = time.monotonic()
    dockerd = None
    checks = None
    passed = failed = 0
    try:
        dockerd = start_dockerd()
        checks = StackChecks()
        for what, step in checks.steps():
            step_started = time.monotonic()
            step()
            passed += 1
            say(f"ok: {what} ({time.monotonic() - step_started:.0f} s)")
    except (DockerTestFailed, docker_images.BuildFailed) as exc:
        failed = 1
        say(f"FAILED: {exc}")
        if checks is not None:
            say("the stack's last log lines:")
            print(compose(checks.env, "logs", "--no-color", "--tail", "40", check=False), flush=True)
    finally:
        if checks is not None:
            compose(checks.env, "down", "-v", "--remove-orphans", check=False)
            say("docker-compose down -v: containers, network and volumes removed")
        if dockerd is not None:
            stop_dockerd(dockerd)
    say(f"{'passed' if not failed else 'failed'} in {time.monotonic() - started:.0f} s")
    # The closing line CI's log readers take for a test run's result.
    print(f"docker-test: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
