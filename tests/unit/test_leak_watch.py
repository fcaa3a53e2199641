"""The suite's leak check (tests/leak_watch.py) finds webhook secrets wherever they are not shown
by design: only the answers that create an endpoint or rotate its secret may carry one."""

from __future__ import annotations

from types import SimpleNamespace

from tests.leak_watch import LeakWatch

SECRET = b'{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}'


def _response(status: int, content: bytes = SECRET):
    return SimpleNamespace(status_code=status, content=content)


def test_a_webhook_secret_in_a_log_line_is_a_leak():
    watch = LeakWatch()

    watch.check("a log record of workers", b"signing with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    assert len(watch.finds) == 1 and "a webhook signing secret" in watch.finds[0]


def test_the_answers_that_show_a_secret_once_are_not_leaks_and_others_are():
    watch = LeakWatch()

    watch.response("POST /api/v1/apps/shop/webhooks", _response(201))
    watch.response("POST /api/v1/apps/shop/webhooks/7/rotate-secret", _response(200))
    assert watch.finds == []

    watch.response("GET /api/v1/apps/shop/webhooks", _response(200))
    watch.response("GET /api/v1/apps/shop/webhooks/7/deliveries", _response(200))
    assert len(watch.finds) == 2
