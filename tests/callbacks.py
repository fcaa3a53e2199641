"""What a transaction hands to the workers on commit, told apart from the webhook run it asks for."""

from __future__ import annotations

from domains.enqueue import _kick_webhooks


def task_sends(callbacks: list) -> list:
    """The on-commit callbacks that send a task, without the webhook delivery run that a
    transaction writing events asks for (domains/enqueue.deliver_webhooks_soon)."""
    return [callback for callback in callbacks if callback is not _kick_webhooks]
