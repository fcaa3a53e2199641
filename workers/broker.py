"""Kombu's Redis transport, with one synchronous Redis client per channel instead of one per call.

Kombu builds a new `redis.Redis` for every publish (and redis-py 8 fills a 300-entry table of
response callbacks in each): two of them per task sent, about 1 ms of CPU, which was the largest
cost of starting 20,000 orders in one sweep. The client is stateless over the channel's
connection pool, so one per channel is enough. Everything else is kombu's.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client(asynchronous=False)
        return self._sync_client


class Transport(kombu_redis.Transport):
    Channel = Channel
