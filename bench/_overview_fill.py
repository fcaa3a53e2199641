"""bench/overview.py's data: domains over every status, one certificate each, the issuance ledger and
the ACME orders, written by server-side SQL (generate_series) so that a million rows take a minute.

Row i (ids are given explicitly, so the first 1,000 are a sample of the million with the same
shares) is domain i, certificate i, issuance i and order i. Which status, source, expiry... a row
gets comes from multiplicative hashes of i, so every kind is scattered over the whole table, as
years of inserts would leave it, and not in runs.
"""

from __future__ import annotations

import datetime
import time

from _harness import fake_chain, fake_sealed_keys, say

APPS = 1_000
# Distinct chains and sealed keys the certificates cycle through: random base64 does not compress,
# so each row stores its full size, as real certificates do (bench/renewal_sweep.py's pool).
POOL = 256
# Ids of the orders that failed: apart from the valid ones (whose id is their certificate's).
FAILED_ORDER_IDS = 100_000_000

# Each status' share, in thousandths of the domains (the order fixes the hash ranges).
STATUS_SHARES = (
    ("in_use", 900),
    ("pending_dns", 30),
    ("not_used", 20),
    ("creating", 10),
    ("action_required", 10),
    ("failing", 10),
    ("disabled", 20),
)
assert sum(share for _, share in STATUS_SHARES) == 1000
SWEPT = ("pending_dns", "failing", "action_required", "creating")
CUSTOM_PERCENT = 5  # certificates uploaded by the customer
EXPIRED_PERCENT = 1  # certificates already past their end
RENEWAL_FAILING_PERMILLE = 5  # Let's Encrypt certificates whose renewal failed lately
NEW_ISSUANCE_PERCENT = 5  # ledger rows that are not renewals (new names)
FAILED_ORDER_EVERY = 4  # one failing or action-required domain in this many has a failed order


def _status_bounds() -> list[int]:
    """Where each status' range of h = (i * 2654435761) % 1000 starts (width_bucket's thresholds)."""
    bounds, lower = [], 0
    for _, share in STATUS_SHARES:
        bounds.append(lower)
        lower += share
    return bounds


# Domain i: two per registered domain (www. and shop.).
_FILL_DOMAINS = """
INSERT INTO domains_domain (
    id, app_id, name, registered_domain, letsencrypt_enabled, status, consecutive_failures,
    next_attempt_at, last_checked_at, last_error, claim_token, quota_reservation, created, updated,
    ownership_token, ownership_verified_at
)
SELECT
    i,
    (%(apps)s::bigint[])[1 + i %% %(app_count)s],
    n.name,
    'customer' || i / 2 || '.com',
    s.status <> 'disabled',
    s.status,
    CASE WHEN s.status = 'failing' THEN 1 + i %% 8 ELSE 0 END,
    CASE WHEN s.status = ANY(%(swept)s) THEN
        %(now)s - interval '10 minutes' + (i %% 7200) * interval '1 second'
    END,
    %(now)s - (i %% 86400) * interval '1 second',
    CASE s.status
        WHEN 'failing' THEN 'Let''s Encrypt could not issue for ' || n.name || E':\n  '
            || 'urn:ietf:params:acme:error:connection: 203.0.113.' || i %% 250
            || E': Timeout during connect (likely firewall problem)\n  (attempt ' || 1 + i %% 8 || ')'
        WHEN 'action_required' THEN 'Add a CNAME record: ' || n.name
            || ' CNAME ingress.bench.example-paas.io (found A 198.51.100.' || i %% 250 || ')'
        WHEN 'pending_dns' THEN 'No CNAME from ' || n.name || E' to\n ingress.bench.example-paas.io yet'
        ELSE ''
    END,
    NULL,
    NULL,
    %(now)s - interval '200 days',
    %(now)s - ((i * 48271) %% (30 * 86400)) * interval '1 second',
    'cw-' || md5(i::text),
    %(now)s - interval '200 days'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (
    SELECT CASE WHEN i %% 2 = 0 THEN 'www.' ELSE 'shop.' END || 'customer' || i / 2 || '.com' AS name
) n
CROSS JOIN LATERAL (
    SELECT (%(statuses)s::text[])[width_bucket((i * 2654435761) %% 1000, %(bounds)s::int[])] AS status
) s
"""

# Certificate i of domain i: Let's Encrypt (90 days) or custom (a year); its end uniform over the
# next 90 days, or in the last 30 for EXPIRED_PERCENT of them. renew_at (Let's Encrypt, Let's
# Encrypt on, not ended): 30 days before the end, or within the next day when that has passed (a
# renewal under way); within 6 hours for the ones whose renewal failed.
_FILL_CERTIFICATES = """
INSERT INTO certificates_certificate (
    id, domain_id, source, fullchain_pem, private_key, not_before, not_after, sans, issuer, serial,
    fingerprint_sha256, renew_at, renewal_claim, renewal_failures, renewal_error, renewal_reservation,
    created
)
SELECT
    d.id,
    d.id,
    t.source,
    (%(chains)s::text[])[1 + d.id %% %(pool)s],
    (%(keys)s::text[])[1 + (d.id / %(pool)s) %% %(pool)s],
    t.not_after - t.lifetime,
    t.not_after,
    ARRAY[d.name],
    CASE WHEN t.source = 'custom' THEN 'C=US, O=DigiCert Inc, CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1'
        ELSE 'C=US, O=Let''s Encrypt, CN=E6' END,
    encode(substr(sha256(('serial ' || d.id)::bytea), 1, 18), 'hex'),
    encode(sha256(('leaf ' || d.id)::bytea), 'hex'),
    CASE WHEN t.renewable THEN
        CASE WHEN t.renewal_failing THEN %(now)s + (d.id %% 21600) * interval '1 second'
            ELSE greatest(t.not_after - interval '30 days', %(now)s + (d.id %% 86400) * interval '1 second')
        END
    END,
    NULL,
    CASE WHEN t.renewal_failing THEN 1 + d.id %% 5 ELSE 0 END,
    CASE WHEN t.renewal_failing THEN 'Order ' || d.id || E' failed at the CA:\n  '
        || 'urn:ietf:params:acme:error:rateLimited: too many new orders recently' ELSE '' END,
    NULL,
    t.not_after - t.lifetime
FROM domains_domain d
CROSS JOIN LATERAL (
    SELECT
        src.source,
        src.ends AS not_after,
        CASE WHEN src.source = 'custom' THEN interval '365 days' ELSE interval '90 days' END AS lifetime,
        src.source = 'letsencrypt' AND d.letsencrypt_enabled AND src.ends > %(now)s AS renewable,
        src.source = 'letsencrypt' AND d.letsencrypt_enabled AND src.ends > %(now)s
            AND (d.id * 48271) %% 1000 < %(renewal_failing_permille)s AS renewal_failing
    FROM (
        SELECT
            CASE WHEN (d.id * 40503) %% 100 < %(custom_percent)s THEN 'custom' ELSE 'letsencrypt' END
                AS source,
            CASE WHEN (d.id * 69069) %% 100 < %(expired_percent)s
                THEN %(now)s - interval '1 hour' - ((d.id * 7) %% (30 * 86400)) * interval '1 second'
                ELSE %(now)s + interval '1 minute'
                    + ((d.id * 2246822519) %% (90 * 86400 - 120)) * interval '1 second'
            END AS ends
    ) src
) t
WHERE d.id BETWEEN %(first)s AND %(last)s
"""

# One ledger row per Let's Encrypt certificate (one registered domain each), issued when it starts.
_FILL_ISSUANCES = """
INSERT INTO certificates_issuance (
    id, registered_domain, names, renewal, fingerprint_sha256, issued_at, issuer,
    spends_letsencrypt_limits
)
SELECT c.id, d.registered_domain, c.sans, (c.id * 16807 / 7) %% 100 >= %(new_issuance_percent)s,
    c.fingerprint_sha256, c.not_before, %(issuer)s, true
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
WHERE c.id BETWEEN %(first)s AND %(last)s AND c.source = 'letsencrypt'
"""

# The valid order of each Let's Encrypt certificate, then failed ones (finished within the last 7
# days) for one failing or action-required domain in FAILED_ORDER_EVERY.
_FILL_ORDERS = """
INSERT INTO certificates_order (
    id, state, names, is_renewal, private_key, order_url, finalize_url, certificate_url, lease_token,
    lease_until, step_attempts, problem, created, updated, finished, account_id, domain_id,
    quota_reservation, renews_id
)
SELECT c.id, 'valid', c.sans, (c.id * 16807 / 7) %% 100 >= %(new_issuance_percent)s, NULL::text,
    'https://acme-v02.api.letsencrypt.org/acme/order/1/' || c.id,
    'https://acme-v02.api.letsencrypt.org/acme/finalize/1/' || c.id,
    'https://acme-v02.api.letsencrypt.org/acme/cert/' || c.serial,
    NULL::uuid, NULL::timestamptz, 0, '', c.not_before - interval '2 minutes', c.not_before,
    c.not_before, %(account)s, c.domain_id, NULL::uuid, NULL::bigint
FROM certificates_certificate c
WHERE c.id BETWEEN %(first)s AND %(last)s AND c.source = 'letsencrypt'
UNION ALL
SELECT %(failed_order_ids)s + d.id, 'invalid', ARRAY[d.name], false, NULL,
    'https://acme-v02.api.letsencrypt.org/acme/order/1/f' || d.id, '', '', NULL, NULL, 0,
    'The CA refused the order: urn:ietf:params:acme:error:unauthorized: no valid answer for ' || d.name,
    f.finished - interval '3 minutes', f.finished, f.finished, %(account)s, d.id, NULL, NULL
FROM domains_domain d
CROSS JOIN LATERAL (
    SELECT %(now)s - ((d.id * 40503) %% (7 * 86400 - 60)) * interval '1 second' - interval '1 minute'
        AS finished
) f
WHERE d.id BETWEEN %(first)s AND %(last)s AND d.status IN ('failing', 'action_required')
    AND d.id %% %(failed_order_every)s = 0
"""

TABLES = ("domains_domain", "certificates_certificate", "certificates_issuance", "certificates_order")

_RESET_SEQUENCES = """
SELECT
    setval(pg_get_serial_sequence('domains_domain', 'id'), (SELECT max(id) FROM domains_domain)),
    setval(
        pg_get_serial_sequence('certificates_certificate', 'id'),
        (SELECT max(id) FROM certificates_certificate)
    ),
    setval(
        pg_get_serial_sequence('certificates_issuance', 'id'), (SELECT max(id) FROM certificates_issuance)
    ),
    setval(pg_get_serial_sequence('certificates_order', 'id'), (SELECT max(id) FROM certificates_order))
"""

_SIZES = """
SELECT
    (SELECT count(*) FROM domains_domain), pg_size_pretty(pg_total_relation_size('domains_domain')),
    (SELECT count(*) FROM certificates_certificate),
    pg_size_pretty(pg_total_relation_size('certificates_certificate')),
    (SELECT count(*) FROM certificates_issuance),
    pg_size_pretty(pg_total_relation_size('certificates_issuance')),
    (SELECT count(*) FROM certificates_order), pg_size_pretty(pg_total_relation_size('certificates_order'))
"""


class Filler:
    """The owners (one region, one user, APPS apps), one ACME account, the heartbeats; then
    `grow(size)` adds rows up to `size` domains and VACUUM ANALYZEs the tables."""

    def __init__(self, now: datetime.datetime) -> None:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.db import connection

        from domains.models import App, Region
        from workers.models import Heartbeat

        self.now = now
        self.filled = 0
        region = Region.objects.create(
            name="bench",
            domain_suffix="bench.example-paas.io",
            cname_target="ingress.bench.example-paas.io",
            ingress_ipv4=["192.0.2.10"],
        )
        owner = get_user_model().objects.create(username="bench")
        apps = App.objects.bulk_create(
            [App(owner=owner, region=region, name=f"app-{n}") for n in range(APPS)], batch_size=APPS
        )
        self.apps = [app.pk for app in apps]
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO certificates_acmeaccount (directory_url, key, account_url, contact, created,"
                " updated) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                [
                    settings.ACME_DIRECTORY_URL,
                    fake_sealed_keys(POOL)[0],
                    "https://acme-v02.api.letsencrypt.org/acme/acct/1",
                    "bench@example.com",
                    now,
                    now,
                ],
            )
            self.account = cursor.fetchone()[0]
        for source in (Heartbeat.Source.BEAT, Heartbeat.Source.WORKER):
            Heartbeat.objects.update_or_create(source=source, defaults={"at": now})
        self.issuer = settings.ACME_ISSUERS[0].name
        self.chains = [fake_chain() for _ in range(POOL)]
        self.keys = fake_sealed_keys(POOL)

    def grow(self, size: int) -> None:
        from django.db import connection, transaction

        first, last = self.filled + 1, size
        params = {
            "first": first,
            "last": last,
            "now": self.now,
            "apps": self.apps,
            "app_count": len(self.apps),
            "chains": self.chains,
            "keys": self.keys,
            "pool": POOL,
            "issuer": self.issuer,
            "account": self.account,
            "statuses": [status for status, _ in STATUS_SHARES],
            "bounds": _status_bounds(),
            "swept": list(SWEPT),
            "custom_percent": CUSTOM_PERCENT,
            "expired_percent": EXPIRED_PERCENT,
            "renewal_failing_permille": RENEWAL_FAILING_PERMILLE,
            "new_issuance_percent": NEW_ISSUANCE_PERCENT,
            "failed_order_ids": FAILED_ORDER_IDS,
            "failed_order_every": FAILED_ORDER_EVERY,
        }
        spent = {}
        with transaction.atomic(), connection.cursor() as cursor:
            for table, statement in zip(
                TABLES, (_FILL_DOMAINS, _FILL_CERTIFICATES, _FILL_ISSUANCES, _FILL_ORDERS), strict=True
            ):
                started = time.perf_counter()
                cursor.execute(statement, params)
                spent[table] = time.perf_counter() - started
            # Ids were given explicitly: the sequences must continue after them.
            cursor.execute(_RESET_SEQUENCES)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE " + ", ".join(TABLES))
        vacuum = time.perf_counter() - started
        self.filled = size
        say(
            f"    filled rows {first:,} to {last:,} in {sum(spent.values()):.1f} s ("
            + ", ".join(f"{table} {seconds:.1f} s" for table, seconds in spent.items())
            + f"); VACUUM ANALYZE {vacuum:.1f} s"
        )
        with connection.cursor() as cursor:
            cursor.execute(_SIZES)
            row = cursor.fetchone()
        say(
            "    "
            + ", ".join(f"{table} {row[2 * n]:,} rows ({row[2 * n + 1]})" for n, table in enumerate(TABLES))
        )
