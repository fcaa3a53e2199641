"""Beat's periodic tasks as rows of django-celery-beat, for data migrations to create."""

from __future__ import annotations

# (name shown in the admin, task, every N seconds, queue)
Entry = tuple[str, str, int, str]


def create_periodic_tasks(apps, entries: list[Entry]) -> None:
    """Creates each entry unless one of that name exists (an operator's edits are kept)."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds, queue in entries:
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "queue": queue, "enabled": True}
        )


def remove_periodic_tasks(apps, entries: list[Entry]) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in entries]).delete()
