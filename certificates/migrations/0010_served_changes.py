"""The routers' change feed (certificates.ServedChange), written by the database itself.

Every insert, delete, or update of a served column of a certificate, and every delete, rename, move
or Let's Encrypt switch of a domain, queues a row-level trigger that runs at COMMIT (a deferred
constraint trigger). There it takes one transaction-scoped advisory lock, appends a feed row and
NOTIFYs. The lock is held until the transaction has committed, so the next transaction's rows get
their `seq` only after these are visible: `seq` increases in commit order, and a router that has
read up to `seq` never misses a change committed later. A rolled-back change writes nothing. No
code path can forget it (the admin, cascades, pruning, raw SQL all go through the triggers), and
updates of columns that change nothing served (renewal claims, backoff) do not fire them.
"""

import django.utils.timezone
from django.db import migrations, models

# hashtext('certwright_served_changes') would do as well; a constant keeps it readable in pg_locks.
FEED_LOCK = 7_146_025_551

FUNCTIONS = f"""
CREATE FUNCTION certwright_feed_append(changed_name text, changed_region bigint) RETURNS void AS $$
DECLARE
    appended bigint;
BEGIN
    -- Held until this transaction has committed: the next one appends after these rows are visible.
    PERFORM pg_advisory_xact_lock({FEED_LOCK});
    INSERT INTO certificates_servedchange (name, region_id, created)
    VALUES (changed_name, changed_region, clock_timestamp())
    RETURNING seq INTO appended;
    PERFORM pg_notify('certwright_served_changes', appended::text);
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION certwright_feed_certificate() RETURNS trigger AS $$
DECLARE
    changed_name text;
    changed_region bigint;
BEGIN
    -- Run at commit: the domain's name and region as they are then. A domain deleted in the same
    -- transaction is gone; its own trigger has recorded the removal.
    SELECT d.name, a.region_id INTO changed_name, changed_region
    FROM domains_domain d JOIN domains_app a ON a.id = d.app_id
    WHERE d.id = CASE WHEN TG_OP = 'DELETE' THEN OLD.domain_id ELSE NEW.domain_id END;
    IF changed_name IS NOT NULL THEN
        PERFORM certwright_feed_append(changed_name, changed_region);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION certwright_feed_domain() RETURNS trigger AS $$
BEGIN
    -- The name as it was, with the region it was served in (null when its app is gone too).
    PERFORM certwright_feed_append(
        OLD.name, (SELECT region_id FROM domains_app WHERE id = OLD.app_id));
    IF TG_OP = 'UPDATE' THEN
        PERFORM certwright_feed_append(
            NEW.name, (SELECT region_id FROM domains_app WHERE id = NEW.app_id));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""

TRIGGERS = """
CREATE CONSTRAINT TRIGGER certwright_feed_certificate_write
AFTER INSERT OR DELETE ON certificates_certificate
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION certwright_feed_certificate();

CREATE CONSTRAINT TRIGGER certwright_feed_certificate_update
AFTER UPDATE OF domain_id, source, fullchain_pem, private_key, not_before, not_after
ON certificates_certificate
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (OLD.domain_id IS DISTINCT FROM NEW.domain_id OR OLD.source IS DISTINCT FROM NEW.source
      OR OLD.fullchain_pem IS DISTINCT FROM NEW.fullchain_pem
      OR OLD.private_key IS DISTINCT FROM NEW.private_key
      OR OLD.not_before IS DISTINCT FROM NEW.not_before OR OLD.not_after IS DISTINCT FROM NEW.not_after)
EXECUTE FUNCTION certwright_feed_certificate();

CREATE CONSTRAINT TRIGGER certwright_feed_domain_delete
AFTER DELETE ON domains_domain
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION certwright_feed_domain();

CREATE CONSTRAINT TRIGGER certwright_feed_domain_update
AFTER UPDATE OF name, app_id, letsencrypt_enabled ON domains_domain
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.app_id IS DISTINCT FROM NEW.app_id
      OR OLD.letsencrypt_enabled IS DISTINCT FROM NEW.letsencrypt_enabled)
EXECUTE FUNCTION certwright_feed_domain();
"""

DROP = """
DROP TRIGGER IF EXISTS certwright_feed_domain_update ON domains_domain;
DROP TRIGGER IF EXISTS certwright_feed_domain_delete ON domains_domain;
DROP TRIGGER IF EXISTS certwright_feed_certificate_update ON certificates_certificate;
DROP TRIGGER IF EXISTS certwright_feed_certificate_write ON certificates_certificate;
DROP FUNCTION IF EXISTS certwright_feed_domain();
DROP FUNCTION IF EXISTS certwright_feed_certificate();
DROP FUNCTION IF EXISTS certwright_feed_append(text, bigint);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("certificates", "0009_drop_fingerprint_index"),
        ("domains", "0004_ownership"),
    ]

    operations = [
        migrations.CreateModel(
            name="ServedChange",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
                ("region_id", models.BigIntegerField(null=True)),
                ("created", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={
                "indexes": [models.Index(fields=["region_id", "seq"], name="served_change_region_seq_idx")],
            },
        ),
        migrations.RunSQL(FUNCTIONS + TRIGGERS, reverse_sql=DROP),
    ]
