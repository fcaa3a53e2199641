"""The events outbox (issue 16): events written in the transaction of the change they tell of, for
webhooks and email to deliver. `seq` draws from its own sequence (the primary key is the event's
uuid, the webhook-id), created first and owned by the column, so dropping the table drops it."""

import uuid

import django.utils.timezone
from django.db import migrations, models

import domains.models

STATUS_CHOICES = [
    ("pending_dns", "Pending DNS"),
    ("creating", "Creating"),
    ("in_use", "In use"),
    ("not_used", "Not used"),
    ("action_required", "Action required"),
    ("failing", "Failing"),
    ("disabled", "Disabled"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("domains", "0005_profile_and_ca_pause"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE SEQUENCE domains_event_seq", reverse_sql="DROP SEQUENCE IF EXISTS domains_event_seq"
        ),
        migrations.CreateModel(
            name="Event",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                (
                    "seq",
                    models.BigIntegerField(
                        db_default=domains.models.NextVal(models.Value("domains_event_seq")), editable=False
                    ),
                ),
                ("created", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "type",
                    models.CharField(
                        choices=[
                            ("domain.action_required", "Domain: action required"),
                            ("domain.failing", "Domain: failing"),
                            ("domain.in_use", "Domain: in use"),
                            ("domain.deleted", "Domain: deleted"),
                            ("certificate.issued", "Certificate: issued"),
                            ("certificate.renewed", "Certificate: renewed"),
                            ("certificate.renewal_failed", "Certificate: renewal failed"),
                            ("certificate.expiring", "Certificate: expiring"),
                            ("certificate.expired", "Certificate: expired"),
                            ("custom_certificate.expiring", "Custom certificate: expiring"),
                        ],
                        max_length=40,
                    ),
                ),
                ("app_id", models.BigIntegerField()),
                ("app_name", models.CharField(max_length=48)),
                ("domain_id", models.BigIntegerField()),
                ("domain_name", models.CharField(max_length=253)),
                (
                    "from_status",
                    models.CharField(blank=True, choices=STATUS_CHOICES, default="", max_length=20),
                ),
                ("to_status", models.CharField(blank=True, choices=STATUS_CHOICES, default="", max_length=20)),
                ("reason", models.TextField(blank=True, default="")),
                ("records", models.JSONField(blank=True, default=list)),
                ("data", models.JSONField(blank=True, default=dict)),
                (
                    "dedupe_key",
                    models.CharField(blank=True, db_default="", default="", editable=False, max_length=200),
                ),
            ],
            options={
                "ordering": ["-seq"],
                "constraints": [
                    models.UniqueConstraint(fields=("seq",), name="event_seq_unique"),
                    models.UniqueConstraint(
                        condition=models.Q(("dedupe_key", ""), _negated=True),
                        fields=("dedupe_key",),
                        name="event_dedupe_key_unique",
                    ),
                ],
                "indexes": [models.Index(fields=["domain_id", "seq"], name="event_domain_seq_idx")],
            },
        ),
        migrations.RunSQL(
            "ALTER SEQUENCE domains_event_seq OWNED BY domains_event.seq", reverse_sql=migrations.RunSQL.noop
        ),
    ]
