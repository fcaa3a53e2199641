"""Beat prunes the history tables (domain events, ended orders, settled revocations, the routers'
change feed) hourly, editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Prune history", "workers.tasks.housekeeping.prune_history", 3600, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0008_revocation_redrive"), ("certificates", "0013_feed_horizon")]

    operations = [migrations.RunPython(create, remove)]
