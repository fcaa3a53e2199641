"""The CLI outside the repository root: the project builds into a wheel holding the CLI alone, that
wheel installs into a fresh environment holding only its declared dependencies, and the installed
`certwright`, like the repository's own script through a symlink, runs from another directory
against the real API (gunicorn on the test database), with a customer made by `manage.py customer`."""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from django.core.management import call_command
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.factories import RegionFactory

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 120


def pip(*args: str, cwd: Path) -> None:
    # --no-index: nothing may be downloaded; the build backend is .venv's (requirements-dev.txt).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args, "--no-index", "--no-deps"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project built as pip builds it, from a copy (a build writes build/ and *.egg-info beside
    its sources, which must not appear in the shared checkout)."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in WHEEL_PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(work / "dist"), "./source", cwd=work)
    [built] = (work / "dist").glob("certwright-*.whl")
    return built


def wheel_metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The files of the wheel, and its METADATA headers."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [path] = [name for name in names if name.endswith(".dist-info/METADATA")]
        headers = Parser().parsestr(archive.read(path).decode())
    return names, {key: headers.get_all(key) or [] for key in set(headers.keys())}


def third_party_imports(package: Path) -> set[str]:
    """The top-level modules the package's files import that are neither the standard library nor
    the package itself."""
    found = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__", package.name}


# What the wheel ships: the CLI, the Django-free reading of certificate and key files it shares
# with the server, and the edge agent (certwright-edge, for router hosts).
WHEEL_PACKAGES = {"cli", "certfiles", "edge"}


def test_the_wheel_holds_the_cli_alone_with_its_entry_point_and_declares_every_import(wheel):
    names, headers = wheel_metadata(wheel)

    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == WHEEL_PACKAGES
    with zipfile.ZipFile(wheel) as archive:
        [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        assert "certwright = cli.main:main" in archive.read(entry_points).decode()
        assert "certwright-edge = edge.main:main" in archive.read(entry_points).decode()
    declared = {canonicalize_name(Requirement(line).name) for line in headers["Requires-Dist"]}
    assert {"requests", "cryptography", "asn1crypto"} <= declared
    distributions = metadata.packages_distributions()
    modules = set().union(*(third_party_imports(ROOT / package) for package in WHEEL_PACKAGES))
    modules -= WHEEL_PACKAGES
    # Such as a package of this checkout: the wheel does not hold it, so the installed CLI cannot run.
    assert not {module for module in modules if module not in distributions}, (
        "cli/ imports modules that are neither in the wheel nor an installed distribution"
    )
    imported = {canonicalize_name(dist) for module in modules for dist in distributions[module]}
    assert "django" not in imported
    assert imported <= declared, (
        f"cli/ imports packages pyproject.toml does not declare: {imported - declared}"
    )


def dependency_closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions `requirements` need, and theirs, by name (extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = metadata.distribution(requirement.name)
            todo += found[name].requires or []
    return found


def only_these(distributions: dict[str, metadata.Distribution], into: Path) -> Path:
    """A directory of links to the files of `distributions` (as this virtualenv has them), for an
    environment that must see those and nothing else."""
    into.mkdir()
    for dist in distributions.values():
        for top in {Path(str(file)).parts[0] for file in dist.files or [] if not str(file).startswith("..")}:
            if not (into / top).exists():
                (into / top).symlink_to(Path(dist.locate_file(top)))
    return into


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the wheel and, on its path, only the CLI's declared dependencies;
    returns its bin directory."""
    work = tmp_path_factory.mktemp("installed")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT)
    python = venv / "bin" / "python"
    pip("--python", str(python), "install", str(wheel), cwd=work)
    _, headers = wheel_metadata(wheel)
    deps = only_these(dependency_closure(headers["Requires-Dist"]), work / "deps")
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout.strip()
    (Path(site_packages) / "certwright-deps.pth").write_text(f"{deps}\n")
    return venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """An environment without this test run's Python settings or proxies."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {**{key: os.environ[key] for key in keep if key in os.environ}, **extra}


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_the_installed_environment_sees_the_installed_cli_and_not_django(installed, tmp_path):
    result = run(
        [
            str(installed / "python"),
            "-c",
            "import cli, requests, cryptography, asn1crypto; print(cli.__file__)",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(installed.parent / "lib"))
    assert run([str(installed / "python"), "-c", "import django"], tmp_path).returncode == 1


@pytest.fixture
def customer_token(transactional_db, redis_servers) -> str:
    """A region and a customer made as an operator makes one; returns the customer's token."""
    RegionFactory()
    out = io.StringIO()
    call_command("customer", "create", "alice", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.fixture
def api_url(web_server) -> str:
    return f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}"


def test_the_installed_certwright_runs_from_another_directory_against_the_api(
    installed, customer_token, api_url, tmp_path
):
    certwright = str(installed / "certwright")
    env = {"CERTWRIGHT_API_URL": api_url, "CERTWRIGHT_API_TOKEN": customer_token}

    helped = run([certwright, "--help"], tmp_path)
    created = run([certwright, "apps-create", "shop"], tmp_path, **env)
    listed = run([certwright, "--app", "shop", "domains"], tmp_path, **env)
    no_token = run([certwright, "apps"], tmp_path, CERTWRIGHT_API_URL=api_url)

    assert helped.returncode == 0 and "exit codes:" in helped.stdout, helped.stderr
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created shop in osc-fr1: it answers at shop.osc-fr1.example-paas.io.")
    assert (listed.returncode, listed.stdout) == (0, "No domains on shop.\n"), listed.stderr
    # Installed, the CLI has no checkout's .env to read nor `make run` to suggest.
    assert no_token.returncode == 3
    assert "manage.py customer create NAME" in no_token.stderr and "make run" not in no_token.stderr


def test_the_repository_script_runs_through_a_symlink_from_another_directory(
    customer_token, api_url, tmp_path
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "certwright").symlink_to(ROOT / "certwright")
    # A `cli` package where the user stands must not stand in for the checkout's.
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "__init__.py").write_text("raise SystemExit('the wrong cli')\n")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CERTWRIGHT_API_URL": api_url,
        "CERTWRIGHT_API_TOKEN": customer_token,
    }

    created = run(["certwright", "apps-create", "shop"], tmp_path, **env)
    listed = run(["certwright", "apps"], tmp_path, **env)

    assert created.returncode == 0, created.stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:4] == [
        "shop",
        "osc-fr1",
        "shop.osc-fr1.example-paas.io",
        "0",
    ]
