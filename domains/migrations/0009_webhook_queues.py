"""Webhook deliveries are claimed by queue (one per endpoint and domain with a pending delivery),
no longer one by one: the claim read every due delivery and looked for an earlier pending one of
each, so a queue stalled behind a retrying delivery made every claim read all of it.

A queue keeps a cursor (the seq its deliveries have ended up to) and the claim's lease, so a
delivery's own row is written once, when it ends, and that write changes no indexed column: the
partial indexes on `state` go, and the table leaves a page's 30% free for those HOT updates.
Queue rows are updated at every claim and every write, without touching an index either
(fillfactor 50). The unique (endpoint, seq) replaces (endpoint, event) and the list index (an
event has one seq); an attempt's own index on its delivery goes (the attempt index begins with it).

The queues of the pending deliveries there are now are made here.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('domains', '0008_notifications'),
    ]

    operations = [
        migrations.CreateModel(
            name='WebhookQueue',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('domain_id', models.BigIntegerField()),
                ('after_seq', models.BigIntegerField()),
                ('next_attempt_at', models.DateTimeField()),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.RemoveConstraint(
            model_name='webhookdelivery',
            name='webhook_delivery_once',
        ),
        migrations.RemoveIndex(
            model_name='webhookdelivery',
            name='webhook_delivery_due_idx',
        ),
        migrations.RemoveIndex(
            model_name='webhookdelivery',
            name='webhook_delivery_head_idx',
        ),
        migrations.RemoveIndex(
            model_name='webhookdelivery',
            name='webhook_delivery_list_idx',
        ),
        migrations.RemoveField(
            model_name='webhookdelivery',
            name='lease_until',
        ),
        migrations.AlterField(
            model_name='webhookattempt',
            name='delivery',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='attempt_log', to='domains.webhookdelivery'),
        ),
        migrations.AddIndex(
            model_name='webhookdelivery',
            index=models.Index(fields=['endpoint', 'domain_id', 'seq'], name='webhook_delivery_queue_idx'),
        ),
        migrations.AddConstraint(
            model_name='webhookdelivery',
            constraint=models.UniqueConstraint(fields=('endpoint', 'seq'), name='webhook_delivery_once'),
        ),
        migrations.AddField(
            model_name='webhookqueue',
            name='endpoint',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='queues', to='domains.webhookendpoint'),
        ),
        migrations.AddIndex(
            model_name='webhookqueue',
            index=models.Index(fields=['next_attempt_at'], name='webhook_queue_due_idx'),
        ),
        migrations.AddConstraint(
            model_name='webhookqueue',
            constraint=models.UniqueConstraint(fields=('endpoint', 'domain_id'), name='webhook_queue_once'),
        ),
        migrations.RunSQL(
            "ALTER TABLE domains_webhookqueue SET (fillfactor = 50)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunSQL(
            "ALTER TABLE domains_webhookdelivery SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE domains_webhookdelivery SET (fillfactor = 50)",
        ),
        migrations.RunSQL(
            """
            INSERT INTO domains_webhookqueue (endpoint_id, domain_id, after_seq, next_attempt_at)
            SELECT DISTINCT ON (endpoint_id, domain_id) endpoint_id, domain_id, seq - 1,
                coalesce(next_attempt_at, now())
            FROM domains_webhookdelivery WHERE state = 'pending'
            ORDER BY endpoint_id, domain_id, seq
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
