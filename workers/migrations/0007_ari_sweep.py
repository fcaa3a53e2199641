"""Beat asks the CA's renewal information (ARI) of due certificates every minute."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Check renewal information (ARI)", "workers.tasks.dns.sweep_ari_checks", 60, "dns"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0006_prune_certificates"), ("certificates", "0011_ari_profiles_revocation")]

    operations = [migrations.RunPython(create, remove)]
