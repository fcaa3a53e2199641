"""Beat sweeps certificates due for renewal and catches statuses up with expiries, every minute."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Renew due certificates", "workers.tasks.dns.sweep_due_renewals", 60, "dns"),
    ("Catch up with expired certificates", "workers.tasks.housekeeping.catch_up_expiries", 60, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0004_prune_issuances"), ("certificates", "0005_renewal_and_custom")]

    operations = [migrations.RunPython(create, remove)]
