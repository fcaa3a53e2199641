"""Settings validation: every problem is reported at once and names its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import EnvReader

ROOT = Path(__file__).resolve().parents[2]
VALID_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_missing_required_values_are_all_named_in_one_error():
    env = EnvReader({})
    env.url("DATABASE_URL", ("postgres",), required=True)
    env.url("ACME_DIRECTORY_URL", ("https",), required=True)
    env.fernet_keys("KEY_ENCRYPTION_KEYS")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env.raise_if_invalid()
    message = str(excinfo.value)
    for name in ("DATABASE_URL", "ACME_DIRECTORY_URL", "KEY_ENCRYPTION_KEYS"):
        assert name in message


def test_url_with_wrong_scheme_is_rejected_and_its_password_redacted():
    env = EnvReader({"CELERY_BROKER_URL": "amqp://user:hunter2@host/"})
    assert env.url("CELERY_BROKER_URL", ("redis", "rediss")) is None
    assert env.errors == [
        "CELERY_BROKER_URL: must be a URL starting with redis:// or rediss://, not 'amqp://user:***@host/'"
    ]


def test_fernet_key_that_is_not_32_bytes_is_rejected_by_position_without_echoing_it():
    env = EnvReader({"KEY_ENCRYPTION_KEYS": f"{VALID_KEY},not-a-key-secret"})
    env.fernet_keys("KEY_ENCRYPTION_KEYS")
    assert env.errors == ["KEY_ENCRYPTION_KEYS: key number 2 is not a Fernet key (32 url-safe base64 bytes)"]
    assert "not-a-key-secret" not in env.errors[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8053", [("127.0.0.1", 8053)]),
        ("10.0.0.1", [("10.0.0.1", 53)]),
        ("[2001:db8::53]:5353, 127.0.0.1:53", [("2001:db8::53", 5353), ("127.0.0.1", 53)]),
        ("2001:db8::53", [("2001:db8::53", 53)]),
    ],
    ids=["ipv4-with-port", "ipv4-default-port", "bracketed-ipv6-and-ipv4", "bare-ipv6"],
)
def test_dns_resolvers_parse_host_and_port(raw, expected):
    env = EnvReader({"DNS_RESOLVERS": raw})
    assert env.host_ports("DNS_RESOLVERS") == expected
    assert env.errors == []


@pytest.mark.parametrize("raw", ["127.0.0.1:99999", "host:port", "[::1", "[::1]x"])
def test_dns_resolvers_reject_malformed_entries(raw):
    env = EnvReader({"DNS_RESOLVERS": raw})
    assert env.host_ports("DNS_RESOLVERS") == []
    assert env.errors and env.errors[0].startswith("DNS_RESOLVERS:")


def test_bool_rejects_words_it_does_not_know():
    env = EnvReader({"DEBUG": "maybe"})
    assert env.bool("DEBUG", False) is False
    assert env.errors == ["DEBUG: must be true or false, not 'maybe'"]


def test_ca_bundle_must_exist():
    env = EnvReader({"ACME_CA_BUNDLE": "/nonexistent/ca.pem"})
    assert env.path("ACME_CA_BUNDLE") is None
    assert "ACME_CA_BUNDLE: names a file that does not exist" in env.errors[0]


def test_admins_are_mail_addresses_with_optional_names():
    env = EnvReader({"ADMINS": "Ops Team <ops@example.com>, oncall@example.com"})
    assert env.mail_pairs("ADMINS") == [
        ("Ops Team", "ops@example.com"),
        ("oncall@example.com", "oncall@example.com"),
    ]
    assert env.errors == []


@pytest.mark.parametrize("raw", ["ops", "Ops <not an address>", "a@b.example, nobody"])
def test_admins_that_are_not_addresses_are_named(raw):
    env = EnvReader({"ADMINS": raw})
    env.mail_pairs("ADMINS")
    assert env.errors and env.errors[0].startswith("ADMINS:") and "is not a mail address" in env.errors[0]


def _start_django(environ: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CERTWRIGHT_", "DJANGO_"))}
    for name in (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "QUOTA_REDIS_URL",
        "ACME_DIRECTORY_URL",
        "ACME_CA_BUNDLE",
        "DNS_RESOLVERS",
        "KEY_ENCRYPTION_KEYS",
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DEBUG",
        "FLOWER_BASIC_AUTH",
        "ACME_CONTACT_EMAIL",
    ):
        clean.pop(name, None)
    clean.update(environ)
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_django_refuses_to_start_without_the_acme_directory_and_names_every_missing_variable():
    result = _start_django({"DEBUG": "false"})
    assert result.returncode != 0
    for name in (
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "QUOTA_REDIS_URL",
        "ACME_DIRECTORY_URL",
        "DNS_RESOLVERS",
        "KEY_ENCRYPTION_KEYS",
    ):
        assert f"{name}:" in result.stderr, name


COMPLETE = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 40,
    "ALLOWED_HOSTS": "certwright.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/certwright",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "QUOTA_REDIS_URL": "redis://127.0.0.1:6379/1",
    "ACME_DIRECTORY_URL": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "DNS_RESOLVERS": "127.0.0.1:53",
    "KEY_ENCRYPTION_KEYS": VALID_KEY,
}


def test_django_starts_with_a_complete_environment():
    result = _start_django(COMPLETE)
    assert result.returncode == 0, result.stderr


def test_django_refuses_both_starttls_and_tls_from_the_start_and_a_bad_admins_list():
    result = _start_django({**COMPLETE, "EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true", "ADMINS": "ops"})
    assert result.returncode != 0
    assert "EMAIL_USE_SSL: cannot be on with EMAIL_USE_TLS" in result.stderr
    assert "ADMINS: 'ops' is not a mail address" in result.stderr


def test_env_example_documents_every_variable_the_settings_read():
    import re

    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "config" / "settings.py").read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert read, "the settings read no variable: the pattern above is stale"
    assert read - documented == set()
