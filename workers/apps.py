from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        # Connects beat's heartbeat to Celery's signals in every process that loads Django.
        from workers import heartbeat  # noqa: F401
