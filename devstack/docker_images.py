"""Builds the Docker images of docker/compose.yml on a machine that can pull nothing from a registry.

`python -m devstack.docker_images` (what `make docker-test` runs first, and the README's deployment
section tells an operator to run):

1. The base image `certwright-base:bookworm`: `debootstrap` of Debian bookworm into a directory, then
   `docker import`. The Debian mirror is read from this machine's apt sources at run time. Every
   Debian package any image needs is installed here, so no build step runs apt (builds have no
   network) and the images share one base layer. Skipped when an image built from the same package
   list exists.
2. Wheels of requirements.txt and of the project itself (the CLI and `certwright-edge`), built on
   the host with `pip wheel` into `build/wheels/` and `build/project/`: pip inside a plain Debian
   image has no trusted route to an index, so the images install them with `--no-index`. The
   requirements are resolved by a virtualenv of the host's Debian python3, the images' interpreter.
3. `docker build` of each image (the classic builder: BuildKit would pull its frontend from a
   registry), with no network (`--network none`): nothing is downloaded at build time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "build" / "wheels"
# The project's own wheel, apart: it changes with the code, and only the edge image installs it.
PROJECT_WHEEL_DIR = ROOT / "build" / "project"
# Debian's python3 on this (bookworm) host is the images' python3: the virtualenv that builds the
# wheels is made from it.
DEBIAN_PYTHON = Path("/usr/bin/python3")
WHEEL_VENV = ROOT / "build" / "wheel-venv"
BASE_IMAGE = "certwright-base:bookworm"
SUITE = "bookworm"
# Every Debian package an image needs (the images install none of their own; see the docstring).
BASE_PACKAGES = (
    "ca-certificates",
    "curl",
    "openssl",
    "python3",
    "python3-venv",
    "postgresql-15",
    "redis-server",
    "pebble",
    "haproxy",
)
# The label that says which package list a base image was made from (so a changed list rebuilds it).
RECIPE_LABEL = "org.certwright.base-recipe"
# (image, Dockerfile, build context), in build order: edge and app need the wheels, all need the base.
IMAGES = (
    ("certwright:dev", "docker/Dockerfile", "."),
    ("certwright-edge:dev", "docker/edge.Dockerfile", "."),
    ("certwright-postgres:dev", "docker/postgres.Dockerfile", "docker"),
    ("certwright-redis:dev", "docker/redis.Dockerfile", "docker"),
    ("certwright-pebble:dev", "docker/pebble.Dockerfile", "docker"),
)
# For docker and docker-compose: the classic builder (BuildKit would pull its Dockerfile frontend
# from a registry), and Compose building through the engine's API, not the CLI.
BUILDER_ENVIRONMENT = {"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


def say(message: str) -> None:
    print(f"[docker images] {message}", flush=True)


class BuildFailed(RuntimeError):
    """A build step failed; the message says which and why."""


def _run(argv: list[str], what: str, **kwargs) -> None:
    """Runs a build step with its output kept out of the way (pip's and docker's chatter), shown
    only when the step fails."""
    result = subprocess.run(
        argv,
        check=False,
        env={**os.environ, **BUILDER_ENVIRONMENT},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )
    if result.returncode != 0:
        output = "\n".join(result.stdout.decode(errors="replace").splitlines()[-40:])
        raise BuildFailed(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")


def _as_root(argv: list[str]) -> list[str]:
    return argv if os.geteuid() == 0 else ["sudo", *argv]


def debian_mirror(sources_list: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR) -> str:
    """The URI of the first apt source of Debian's main archive for `SUITE` (one-line `.list` files
    and deb822 `.sources` files alike); the security archive and other suites are not it."""
    files = [sources_list, *sorted(sources_dir.glob("*.list"))] if sources_dir.is_dir() else [sources_list]
    for path in files:
        if path.is_file():
            for uri, suites in _one_line_sources(path.read_text()):
                if SUITE in suites:
                    return uri
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for uri, suites in _deb822_sources(path.read_text()):
            if SUITE in suites:
                return uri
    raise BuildFailed(f"no apt source for Debian {SUITE} in {sources_list} or {sources_dir}/")


def _one_line_sources(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        # Options such as [arch=amd64 signed-by=...] come before the URI.
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            found.append((words[0], [words[1]]))
    return found


def _deb822_sources(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        found += [(uri, suites) for uri in fields.get("uris", "").split()]
    return found


def base_recipe() -> str:
    """What the base image is made from; a base with another recipe is rebuilt."""
    return hashlib.sha256(f"{SUITE} minbase {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:16]


def _image_label(image: str, label: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def build_base() -> None:
    """`certwright-base:bookworm` from debootstrap, unless one of the same recipe exists."""
    recipe = base_recipe()
    if _image_label(BASE_IMAGE, RECIPE_LABEL) == recipe:
        say(f"{BASE_IMAGE} is up to date (recipe {recipe})")
        return
    mirror = debian_mirror()
    started = time.monotonic()
    say(f"debootstrap {SUITE} from {mirror} with {', '.join(BASE_PACKAGES)}")
    target = Path(tempfile.mkdtemp(prefix="certwright-base-", dir="/var/tmp"))
    try:
        _run(
            _as_root(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(target),
                    mirror,
                ]
            ),
            "debootstrap",
        )
        # The mirror stays out of the image (it is this machine's), and so do apt's downloads.
        _run(
            _as_root(
                ["sh", "-c", f"rm -rf {target}/var/cache/apt/archives/*.deb {target}/var/lib/apt/lists/*"]
            ),
            "cleaning the base",
        )
        tar = subprocess.Popen(_as_root(["tar", "-C", str(target), "-c", "."]), stdout=subprocess.PIPE)
        _run(
            [
                "docker",
                "import",
                "--change",
                f"LABEL {RECIPE_LABEL}={recipe}",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                BASE_IMAGE,
            ],
            "docker import",
            stdin=tar.stdout,
        )
        if tar.wait() != 0:
            raise BuildFailed("tar of the debootstrap directory failed")
    finally:
        subprocess.run(_as_root(["rm", "-rf", "--one-file-system", str(target)]), check=False)
    say(f"{BASE_IMAGE} built in {time.monotonic() - started:.0f} s")


def build_wheels() -> None:
    """Wheels of requirements.txt into build/wheels/, resolved by Debian's own python3 (the images'
    interpreter) and kept while requirements.txt is unchanged; the project's own wheel into
    build/project/, built every time (it is this checkout's code)."""
    started = time.monotonic()
    # Resolved by the images' interpreter, not the project's: a dependency's environment marker can
    # depend on the patch level (redis wants async-timeout below Python 3.11.3; bookworm has 3.11.2).
    if not (WHEEL_VENV / "bin" / "pip").exists():
        _run([str(DEBIAN_PYTHON), "-m", "venv", "--clear", str(WHEEL_VENV)], "python3 -m venv (Debian's)")
    quiet = ["--quiet", "--disable-pip-version-check"]
    stamp = WHEELS / ".requirements.sha256"
    wanted = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(WHEELS, ignore_errors=True)
        WHEELS.mkdir(parents=True)
        pip = [str(WHEEL_VENV / "bin" / "pip"), "wheel", *quiet, "-w", str(WHEELS)]
        _run([*pip, "-r", str(ROOT / "requirements.txt")], "pip wheel -r requirements.txt", cwd=ROOT)
        stamp.write_text(wanted)
    # The project's own wheel (the CLI and the edge agent, pure Python), built offline by the
    # project's virtualenv like bootstrap.sh's install (its setuptools is the pinned one).
    shutil.rmtree(PROJECT_WHEEL_DIR, ignore_errors=True)
    # Beside another of the same version, pip could take either: only build/project/ holds it.
    for stale in WHEELS.glob("certwright-*.whl"):
        stale.unlink()
    project_pip = [sys.executable, "-m", "pip", "wheel", *quiet, "-w", str(PROJECT_WHEEL_DIR), "--no-deps"]
    _run([*project_pip, "--no-build-isolation", "--no-index", str(ROOT)], "pip wheel .", cwd=ROOT)
    # setuptools leaves its build tree behind; it is not part of the wheels.
    for leftover in (ROOT / "build" / "lib", ROOT / "build" / "bdist.linux-x86_64"):
        shutil.rmtree(leftover, ignore_errors=True)
    count = len(list(WHEELS.glob("*.whl")))
    say(
        f"{count} wheels in {WHEELS.relative_to(ROOT)}/, the project's in "
        f"{PROJECT_WHEEL_DIR.relative_to(ROOT)}/, in {time.monotonic() - started:.0f} s"
    )


def build_images() -> None:
    """Every image of docker/compose.yml, from the base and the wheels, with no network."""
    for image, dockerfile, context in IMAGES:
        started = time.monotonic()
        _run(
            [
                "docker",
                "build",
                "--network",
                "none",
                "--quiet",
                "-t",
                image,
                "-f",
                str(ROOT / dockerfile),
                str(ROOT / context),
            ],
            f"docker build of {image}",
        )
        say(f"{image} built in {time.monotonic() - started:.0f} s")


def build_all() -> None:
    """The base (when missing or stale), the wheels, then every image; BuildFailed says what failed."""
    build_base()
    build_wheels()
    build_images()


def main() -> int:
    started = time.monotonic()
    try:
        build_all()
    except BuildFailed as exc:
        say(str(exc))
        return 1
    say(f"all images built in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
