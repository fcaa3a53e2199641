from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "domains"
    verbose_name = "Domains"

    def ready(self) -> None:
        from domains import checks  # noqa: F401 (registers the system checks)
