"""Beat sends again, every two minutes, the owed revocations whose message was lost."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Re-drive owed revocations", "workers.tasks.acme.redrive_revocations", 120, "acme"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0007_ari_sweep"), ("certificates", "0012_revocation_queue")]

    operations = [migrations.RunPython(create, remove)]
