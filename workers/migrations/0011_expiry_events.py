"""Beat writes the certificates' expiry events (issue 16) hourly, editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Record expiry events", "workers.tasks.housekeeping.record_expiry_events", 3600, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0010_beat_lease"), ("domains", "0006_event_outbox")]

    operations = [migrations.RunPython(create, remove)]
