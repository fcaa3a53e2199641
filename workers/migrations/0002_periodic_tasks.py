"""Creates beat's periodic tasks, so operators see and edit them in the admin (django-celery-beat)."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

# (name shown in the admin, task, every N seconds, queue)
PERIODIC_TASKS = [
    ("Worker heartbeat", "workers.tasks.housekeeping.heartbeat", 30, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [
        ("workers", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
