"""Beat asks for a webhook delivery run every 15 s (issue 16): a backstop for runs asked for when
events are written, and the moment retries come due; editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Deliver webhooks", "workers.tasks.webhooks.deliver_webhooks", 15, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0011_expiry_events"), ("domains", "0007_webhooks")]

    operations = [migrations.RunPython(create, remove)]
