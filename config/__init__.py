"""The project package: settings, URLs and the Celery app, nothing else.

The design calls it `platform/`, but a top-level package of that name shadows the standard library's
`platform` module (which `uuid` imports on Linux), so Django could not start.
"""

from config.celery import app as celery_app

__all__ = ["celery_app"]
