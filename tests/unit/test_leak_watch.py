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


def test_a_sealed_secret_in_a_log_line_is_a_leak_even_cut_short():
    token = b"gAAAAABnT3x1Qm9vVHJ1ZV9rZXlfbWF0ZXJpYWxfaXNfaGVyZQ_aBcD-eFgH=="
    watch = LeakWatch()

    watch.check("a log record of workers", b"sealed key=" + token)
    watch.check("a log record of workers", b'{"key": "' + token[:40] + b'..."}')

    assert len(watch.finds) == 2 and all("a Fernet token" in find for find in watch.finds)


def test_zero_bytes_inside_a_standard_base64_blob_are_not_a_sealed_secret():
    # A browser's log line with a screenshot: zero bytes spell gAAAAA in the middle of the run.
    blob = (
        b"iVBORw0KGgo/s7MDBRULHBDhQUFZUQJZTu/O4yOK6wu4Ki8sn/d/bsma6dmZ373GdmJPLy8h"
        b"gAAAAAAACAf50YAwAAAAAAAFAOIAAGAAAAAACAc+Q=="
    )
    watch = LeakWatch()

    watch.check("log file chromedriver.log", b'[1.2][INFO]: screenshot "' + blob + b'"')

    assert watch.finds == []
