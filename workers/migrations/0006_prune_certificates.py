"""Beat deletes Let's Encrypt certificates long expired and replaced, hourly."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Prune expired certificates", "workers.tasks.housekeeping.prune_certificates", 3600, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0005_renewal_and_expiry")]

    operations = [migrations.RunPython(create, remove)]
