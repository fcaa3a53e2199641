"""ASGI entry point: the feed service, `gunicorn config.asgi:application -k asgi` (devstack/commands.py
feed_command). It serves the routers' long-poll (GET /routers/v1/changes?wait=) and snapshot, whose
waits cost an asyncio task each instead of a sync worker; it can answer every other URL too.

Database connections are not kept between requests here (Django's advice under ASGI: each request
runs its synchronous parts in a thread of its own, whose connection would otherwise stay open), unless
DATABASE_CONN_MAX_AGE is set for this process.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
