"""Beat asks for a notification mail run every 30 s (issue 16); editable in the admin."""

from django.db import migrations

from workers.periodic import create_periodic_tasks, remove_periodic_tasks

PERIODIC_TASKS = [
    ("Send notification mails", "workers.tasks.notifications.send_notification_mails", 30, "default"),
]


def create(apps, schema_editor):
    create_periodic_tasks(apps, PERIODIC_TASKS)


def remove(apps, schema_editor):
    remove_periodic_tasks(apps, PERIODIC_TASKS)


class Migration(migrations.Migration):
    dependencies = [("workers", "0012_webhook_deliveries"), ("domains", "0008_notifications")]

    operations = [migrations.RunPython(create, remove)]
