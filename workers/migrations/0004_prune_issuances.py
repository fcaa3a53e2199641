"""Beat prunes the issuance ledger hourly, editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Prune the issuance ledger", "workers.tasks.housekeeping.prune_issuances", 3600, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0003_sweep_and_redrive")]

    operations = [migrations.RunPython(create, remove)]
