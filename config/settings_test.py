"""Settings for the test suite: the real settings, with an environment made for one test run.

The suite starts its own Redis servers, Pebble and challtestsrv on free ports. The ports are chosen
here, at import, and exported, so that the Celery workers the suite starts as subprocesses (which
import this module with the environment already set) agree with the test process.
"""

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

from devstack.ports import free_port, free_tcp_udp_port
from devstack.tls import write_localhost_tls

if "CERTWRIGHT_TEST_RUN_DIR" not in os.environ:
    run_dir = Path(tempfile.mkdtemp(prefix="certwright-test-"))
    os.environ["CERTWRIGHT_TEST_RUN_DIR"] = str(run_dir)
    ports = {
        "CERTWRIGHT_TEST_BROKER_PORT": free_port(),
        "CERTWRIGHT_TEST_QUOTA_PORT": free_port(),
        "CERTWRIGHT_TEST_PEBBLE_PORT": free_port(),
        "CERTWRIGHT_TEST_PEBBLE_MANAGEMENT_PORT": free_port(),
        "CERTWRIGHT_TEST_DNS_PORT": free_tcp_udp_port(),
        "CERTWRIGHT_TEST_CHALLTESTSRV_PORT": free_port(),
        "CERTWRIGHT_TEST_HTTP01_PORT": free_port(),
        "CERTWRIGHT_TEST_TLSALPN_PORT": free_port(),
        "CERTWRIGHT_TEST_SMTP_PORT": free_port(),
    }
    for name, port in ports.items():
        os.environ[name] = str(port)
    ca_path, _, _ = write_localhost_tls(run_dir / "pebble" / "tls")
    defaults = {
        "DEBUG": "false",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-for-the-validator",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        "DATABASE_URL": os.environ.get(
            "CERTWRIGHT_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certwright"
        ),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{ports['CERTWRIGHT_TEST_BROKER_PORT']}/0",
        "QUOTA_REDIS_URL": f"redis://127.0.0.1:{ports['CERTWRIGHT_TEST_QUOTA_PORT']}/0",
        "ACME_DIRECTORY_URL": f"https://127.0.0.1:{ports['CERTWRIGHT_TEST_PEBBLE_PORT']}/dir",
        "ACME_CA_BUNDLE": str(ca_path),
        "ACME_CONTACT_EMAIL": "ops@example.com",
        "DNS_RESOLVERS": f"127.0.0.1:{ports['CERTWRIGHT_TEST_DNS_PORT']}",
        # Pebble validates HTTP-01 on the test web server's port, and so does the self check.
        "HTTP01_SELF_CHECK_PORT": str(ports["CERTWRIGHT_TEST_HTTP01_PORT"]),
        # The tests whose validations must fail at Pebble point the name where nothing answers:
        # their orders are answered after 3 s of self check, not 5 minutes. The self check's own
        # tests set the shipped 300 s (tests/integration/test_http01_self_check.py).
        "HTTP01_SELF_CHECK_SECONDS": "3",
        "KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "FLOWER_BASIC_AUTH": "ops:test-password",
        # Pebble's root, written by the pebble_stack fixture once Pebble has made it.
        "EXTRA_TRUSTED_ROOTS": str(run_dir / "pebble" / "roots.pem"),
        # Wildcards over DNS-01: the challenge records go to challtestsrv, which Pebble asks.
        "DNS01_ZONE": "dns01.example-paas.net",
        "DNS01_PROVIDER": "challtestsrv",
        "DNS01_CHALLTESTSRV_URL": f"http://127.0.0.1:{ports['CERTWRIGHT_TEST_CHALLTESTSRV_PORT']}",
        # Short leases, so that tests see the re-drive continue orders of killed workers quickly.
        "ACME_ORDER_LEASE_SECONDS": "8",
        "DOMAIN_CHECK_LEASE_SECONDS": "8",
        # The tests' webhook receivers listen on plain HTTP at 127.0.0.3 (tests/webhook_receiver.py);
        # the address rule's own tests turn the allowlist off.
        "WEBHOOK_ALLOW_HTTP": "1",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.3/32",
        # Mail goes to the suite's SMTP server (devstack/mail_sink.py, the `smtp` fixture); a user's
        # first event is mailed at the next run, not a minute later (the gathering's own test sets it).
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(ports["CERTWRIGHT_TEST_SMTP_PORT"]),
        "EMAIL_TIMEOUT": "5",
        "NOTIFICATION_GATHER_SECONDS": "0",
        "PUBLIC_BASE_URL": "https://certs.example-paas.io",
    }
    # The test run's own services replace whatever a developer's shell exported.
    os.environ.update(defaults)

from config.settings import *  # noqa: F403

# Hashing passwords slowly buys nothing in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT = Path(os.environ["CERTWRIGHT_TEST_RUN_DIR"]) / "static"
STATIC_ROOT.mkdir(exist_ok=True)
