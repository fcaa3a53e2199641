"""What the edge benchmark stores in Certwright: regions of domains, each with a real Let's Encrypt-source
certificate of the bench CA (Django in this process, as bench/routers.py fills), and the large
tables filled with server-side SQL (as bench/renewal_sweep.py fills)."""

from __future__ import annotations

import datetime
import time

from _edge_pki import BenchPki, Leaf
from _harness import say

ZONE = "bench-edge.com"


def create_region(name: str):
    """A region and one app in it (the owner is created once)."""
    from django.contrib.auth import get_user_model

    from domains.models import App, Region

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner", defaults={"password": "!"})
    region = Region.objects.create(
        name=name,
        domain_suffix=f"{name}.example-paas.io",
        cname_target=f"ingress.{name}.example-paas.io",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    app = App.objects.create(owner=owner, region=region, name=f"app-{name}")
    return region, app


def fill_region(pki: BenchPki, app, names: list[str]) -> dict[str, Leaf]:
    """One domain per name in `app`, in use, each with its own real leaf stored as its Let's
    Encrypt certificate (sealed key, renewal due at two thirds). Returns name -> leaf."""
    from django.db import transaction

    from certificates.models import Certificate, CertificateSource, renewal_due
    from certificates.sealing import seal
    from domains.models import Domain, DomainStatus

    started = time.perf_counter()
    leaves = {name: pki.leaf(name) for name in names}
    minted = time.perf_counter()
    with transaction.atomic():
        domains = Domain.objects.bulk_create(
            [
                Domain(app=app, name=name, registered_domain=ZONE, status=DomainStatus.IN_USE)
                for name in names
            ],
            batch_size=2000,
        )
        Certificate.objects.bulk_create(
            [
                Certificate(
                    domain=domain,
                    source=CertificateSource.LETSENCRYPT,
                    fullchain_pem=leaves[domain.name].chain_pem.decode(),
                    private_key=seal(leaves[domain.name].key_pem),
                    not_before=leaves[domain.name].certificate.not_valid_before_utc,
                    not_after=leaves[domain.name].certificate.not_valid_after_utc,
                    sans=[domain.name],
                    issuer=leaves[domain.name].certificate.issuer.rfc4514_string(),
                    serial=f"{leaves[domain.name].certificate.serial_number:x}",
                    fingerprint_sha256=leaves[domain.name].fingerprint,
                    renew_at=renewal_due(
                        leaves[domain.name].certificate.not_valid_before_utc,
                        leaves[domain.name].certificate.not_valid_after_utc,
                    ),
                )
                for domain in domains
            ],
            batch_size=2000,
        )
    say(
        f"    {len(names):,} domains in region {app.region.name}, each with its own certificate "
        f"(minted in {minted - started:.1f} s, stored in {time.perf_counter() - minted:.1f} s)"
    )
    return leaves


def issue(pki: BenchPki, name: str) -> Leaf:
    """A new Let's Encrypt-source certificate stored for `name` (the one writer, store_certificate,
    in its own transaction): what a finished order or a renewal does. Returns when committed."""
    from django.db import transaction
    from django.utils import timezone

    from certificates.facts import certificate_facts
    from certificates.models import CertificateSource
    from certificates.store import store_certificate
    from domains.models import Domain

    leaf = pki.leaf(name, not_before=datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    domain_id = Domain.objects.values_list("pk", flat=True).get(name=name)
    facts = certificate_facts([leaf.certificate, pki.intermediate])
    with transaction.atomic():
        stored = store_certificate(
            domain_id, CertificateSource.LETSENCRYPT, facts, leaf.key_pem, timezone.now()
        )
    if stored is None:
        raise SystemExit(f"VOID: {name} already held the certificate just minted")
    return leaf


def upload(pki: BenchPki, name: str) -> Leaf:
    """A custom certificate uploaded for `name` through the service the API uses."""
    from domains.custom_certificates import install_custom_certificate
    from domains.models import Domain

    leaf = pki.leaf(name)
    install_custom_certificate(Domain.objects.get(name=name), leaf.chain_pem, key=leaf.key_pem)
    return leaf


def remove(name: str) -> None:
    """The custom certificate of `name` removed through the service the API uses."""
    from domains.custom_certificates import remove_custom_certificate
    from domains.models import Domain

    if not remove_custom_certificate(Domain.objects.get(name=name)):
        raise SystemExit(f"VOID: {name} had no custom certificate to remove")


# --- 100,000 certificates with SQL ----------------------------------------------------------------

_FILL_DOMAINS = """
INSERT INTO domains_domain (
    app_id, name, registered_domain, letsencrypt_enabled, status, consecutive_failures,
    next_attempt_at, last_checked_at, last_error, claim_token, quota_reservation, created, updated,
    ownership_token, ownership_verified_at
)
SELECT
    %(app)s, 'c' || i || '.cold.' || %(zone)s, 'cold.' || %(zone)s, true, 'in_use', 0,
    NULL, %(now)s, '', NULL, NULL, %(now)s, %(now)s, 'cw-' || md5(i::text), %(now)s
FROM generate_series(1, %(count)s) AS i
"""

# Each domain gets one of the pool's real certificates (its chain, sealed key, dates and
# fingerprint): a router's snapshot does not check that a certificate covers its name.
_FILL_CERTIFICATES = """
INSERT INTO certificates_certificate (
    domain_id, source, fullchain_pem, private_key, not_before, not_after, sans, issuer, serial,
    fingerprint_sha256, renew_at, renewal_claim, renewal_failures, renewal_error, renewal_reservation,
    created
)
SELECT
    d.id, 'letsencrypt', p.chain, p.sealed, p.not_before, p.not_after, ARRAY[d.name], p.issuer, p.serial,
    p.fingerprint, p.not_before + (p.not_after - p.not_before) * 2 / 3, NULL, 0, '', NULL, %(now)s
FROM domains_domain d
JOIN LATERAL (
    SELECT * FROM unnest(
        %(chains)s::text[], %(sealed)s::text[], %(not_before)s::timestamptz[], %(not_after)s::timestamptz[],
        %(issuers)s::text[], %(serials)s::text[], %(fingerprints)s::text[]
    ) WITH ORDINALITY AS p(chain, sealed, not_before, not_after, issuer, serial, fingerprint, n)
    WHERE p.n = 1 + d.id %% %(pool)s
) p ON true
WHERE d.app_id = %(app)s
"""


def fill_cold(pki: BenchPki, app, count: int, pool: int = 16) -> dict[str, str]:
    """`count` domains `c<i>.cold.<zone>` in `app`, each with one of `pool` real certificates;
    returns fingerprint -> chain for checking what the agent wrote."""
    from django.db import connection, transaction
    from django.utils import timezone

    from certificates.sealing import seal

    leaves = [pki.leaf(f"pool{n}.cold.{ZONE}") for n in range(pool)]
    params = {
        "app": app.pk,
        "zone": ZONE,
        "now": timezone.now(),
        "count": count,
        "pool": pool,
        "chains": [leaf.chain_pem.decode() for leaf in leaves],
        "sealed": [seal(leaf.key_pem).token for leaf in leaves],
        "not_before": [leaf.certificate.not_valid_before_utc for leaf in leaves],
        "not_after": [leaf.certificate.not_valid_after_utc for leaf in leaves],
        "issuers": [leaf.certificate.issuer.rfc4514_string() for leaf in leaves],
        "serials": [f"{leaf.certificate.serial_number:x}" for leaf in leaves],
        "fingerprints": [leaf.fingerprint for leaf in leaves],
    }
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FILL_DOMAINS, params)
        cursor.execute(_FILL_CERTIFICATES, params)
        if cursor.rowcount != count:
            raise SystemExit(f"VOID: {cursor.rowcount} certificates stored for the cold start, not {count}")
    filled = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE domains_domain, certificates_certificate, certificates_servedchange")
    say(
        f"    {count:,} domains in region {app.region.name} with certificates, by SQL, "
        f"in {filled - started:.1f} s "
        f"(the feed's triggers included; {pool} real certificates repeated, names distinct), "
        f"VACUUM ANALYZE {time.perf_counter() - filled:.1f} s"
    )
    return {leaf.fingerprint: leaf.chain_pem.decode() for leaf in leaves}


_FILL_FEED = """
INSERT INTO certificates_servedchange (name, region_id, created)
SELECT
    'n' || i || '.feed.' || %(zone)s,
    CASE WHEN i %% 1000 = 0 THEN NULL ELSE (%(regions)s::bigint[])[1 + i %% %(region_count)s] END,
    %(now)s - (%(count)s - i) * interval '100 milliseconds'
FROM generate_series(1, %(count)s) AS i
"""


def fill_feed(count: int, regions: list[int]) -> None:
    """`count` rows appended to the change feed, spread over `regions` (one in 1,000 with no region,
    as a deleted app's), then VACUUM ANALYZE."""
    from django.db import connection, transaction
    from django.utils import timezone

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _FILL_FEED,
            {
                "zone": ZONE,
                "regions": regions,
                "region_count": len(regions),
                "now": timezone.now(),
                "count": count,
            },
        )
    filled = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE certificates_servedchange")
        cursor.execute(
            "SELECT count(*), pg_size_pretty(pg_total_relation_size('certificates_servedchange'))"
            " FROM certificates_servedchange"
        )
        rows, size = cursor.fetchone()
    say(
        f"    {count:,} feed rows appended in {filled - started:.1f} s, VACUUM ANALYZE "
        f"{time.perf_counter() - filled:.1f} s: certificates_servedchange holds {rows:,} rows "
        f"({size} with indexes)"
    )
