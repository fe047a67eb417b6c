"""kombu's Redis transport with one client for a channel's own commands.

kombu's Redis channel builds a new ``redis.Redis`` client around its connection pool
for each command it sends outside the poller (the pipeline that settles an ack, the
one that stores an unacked message, a restore): two a task. With redis-py 8 a new
client copies some 170 response callbacks into a case-insensitive dict, which made
those constructions the largest cost of a delivery on Redis. This channel keeps one
client per connection pool instead (redis-py clients are safe to share: each command
takes a connection from the pool). Everything else is kombu's.

Imported only when the worker's broker is Redis, so an AMQP worker never loads
redis-py.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, reusing one client where it would build one a command."""

    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the poller's own client (BRPOP, LISTEN): kombu caches it
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._shared_client
        # The pool is replaced when the channel reconnects: so is the client.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class RedisTransport(kombu_redis.Transport):
    """kombu's ``redis://`` transport, with `RedisChannel`."""

    Channel = RedisChannel
