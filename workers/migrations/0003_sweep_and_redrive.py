"""Beat's DNS sweep and order re-drive, every 60 s, editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Check due domains (DNS, then order)", "workers.tasks.dns.sweep_due_domains", 60, "dns"),
    ("Re-drive orders whose lease expired", "workers.tasks.acme.redrive_orders", 60, "acme"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0002_periodic_tasks")]

    operations = [migrations.RunPython(create, remove)]
