from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        # Connects to Celery's signals in every process that loads Django: beat's heartbeat, and
        # the check that drops a database connection a PostgreSQL restart broke before each task.
        from workers import db_sessions, heartbeat  # noqa: F401
