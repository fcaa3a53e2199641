"""Where the test ACME proxy (devstack/acme_proxy.py) gets an account's key to re-sign a newOrder that
names a profile: Certwright's own database, which holds the platform's account keys sealed.

In process, the tests pass `from_database` as the proxy's `account_key`; out of process,
`python -m devstack.acme_proxy ... --account-key devstack.acme_account_keys:from_database` with
DJANGO_SETTINGS_MODULE and DATABASE_URL (and the sealing keys) of the Certwright it serves.
"""

from __future__ import annotations

import django
import josepy as jose
from django.apps import apps
from django.db import connection


def from_database(kid: str) -> jose.JWK:
    """The key of the platform's account registered as `kid` (its account URL), unsealed. Runs in a
    proxy thread: it closes that thread's connection, so nothing holds the database open."""
    if not apps.ready:
        # The proxy in a process of its own: Django is set up on first use.
        django.setup()
    # Imported here, once the apps are ready: a test plugin imports this module before they are.
    from certificates.models import AcmeAccount

    try:
        account = AcmeAccount.objects.get(account_url=kid)
        return jose.JWKEC.load(account.key.reveal())
    finally:
        connection.close()
