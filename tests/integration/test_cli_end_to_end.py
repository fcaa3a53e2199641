"""The `certwright` CLI as a customer runs it, against the real API under gunicorn, a Celery worker
and Pebble: a domain added and issued, a custom certificate uploaded from DER files and removed
again, the domain removed; and the exit codes of a user error and of a bad token."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.pointing import point_at_platform
from tests.integration.polling import wait_for
from tests.pki import der, key_der

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _name() -> str:
    # Its own registered domain, so that its Let's Encrypt quota is its own.
    return f"www.cli-{uuid.uuid4().hex[:10]}.com"


def test_a_domain_is_added_issued_given_a_custom_certificate_from_der_files_and_removed(
    issuance_stack, challtestsrv, app, cli, trusted_pki, tmp_path
):
    name = _name()
    # An A record to the shared ingress, and the TXT record that proves the name is the app's.
    point_at_platform(challtestsrv, app, name)

    added = cli.ok("domains-add", name)
    assert added.startswith(f"Added {name} to {cli.app_name}: ")
    issued = wait_for(
        lambda: (found := cli.domain(name))["status"] == "in_use" and found,
        timeout=60,
        interval=0.5,
        what=f"{name} in use",
        describe=lambda: cli.domain(name),
    )
    assert issued["certificate"]["source"] == "letsencrypt"
    assert issued["certificate"]["sans"] == [name]

    leaf, key = trusted_pki.leaf([name])
    files = {"leaf.der": der(leaf), "inter.der": der(trusted_pki.intermediate), "key.der": key_der(key)}
    for file_name, data in files.items():
        (tmp_path / file_name).write_bytes(data)
    out = cli.ok(
        "domains-ssl",
        "--cert",
        str(tmp_path / "leaf.der"),
        "--chain",
        str(tmp_path / "inter.der"),
        "--key",
        str(tmp_path / "key.der"),
        name,
    )
    assert out.startswith(f"Installed the custom certificate of {name}")
    custom = cli.domain(name)
    assert (custom["status"], custom["custom_certificate"]) == ("not_used", True)
    assert custom["certificate"]["source"] == "custom"
    assert custom["certificate"]["issuer"] == leaf.issuer.rfc4514_string()

    shown = cli.ok("domains-show", name)
    assert "custom certificate  uploaded" in shown
    assert "events (newest first):\n" in shown
    assert "in_use → not_used: " in shown

    cli.ok("domains-ssl", "--disable", name)
    fallback = cli.domain(name)
    assert (fallback["status"], fallback["custom_certificate"]) == ("in_use", False)
    assert fallback["certificate"]["source"] == "letsencrypt"

    listed = json.loads(cli.ok("--json", "domains"))
    assert name in [found["name"] for found in listed]
    assert cli.ok("domains-remove", name) == f"Removed {name} from {cli.app_name}.\n"
    assert name not in [found["name"] for found in json.loads(cli.ok("--json", "domains"))]


def test_showing_a_domain_the_app_does_not_have_exits_1_with_the_apis_message(cli):
    result = cli("domains-show", "nowhere.example.com")
    assert result.returncode == 1
    assert result.stderr == f"certwright: no domain nowhere.example.com on {cli.app_name}\n"
    assert result.stdout == ""


def test_a_bad_token_exits_3_with_one_line_on_stderr(cli):
    result = cli("domains", token="cwt_" + "x" * 40)
    assert result.returncode == 3
    assert result.stderr == (
        "certwright: invalid or revoked API token: check the token (CERTWRIGHT_API_TOKEN or --token);"
        " the platform's operator makes one with `manage.py customer create NAME` (a new customer)"
        " or `manage.py api_token create NAME` (an existing user)\n"
    )
