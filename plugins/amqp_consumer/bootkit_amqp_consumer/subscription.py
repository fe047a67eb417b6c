"""What a task consumer reads on: one channel, the queues consumed on it, its prefetch
count and the settling of its deliveries.

Queues added or cancelled by control commands are remembered in the worker's state,
so a new subscription after a reconnect consumes the same queues. Used by the thread
holding the consumer loop's turn only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kombu.common import QoS
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer

from bootkit_amqp_consumer.acks import Acks
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.state import WorkerState


def wanted_queues(config: WorkerConfig, state: WorkerState) -> list[Queue]:
    """The queues to consume: the configured ones, with those added and without those
    cancelled by control commands."""
    wanted = {name: (name, "direct", name) for name in config.queues}
    wanted.update(state.added_queues)
    return [
        Queue(name, Exchange(exchange, kind), routing_key=key)
        for name, (exchange, kind, key) in wanted.items()
        if name not in state.cancelled_queues
    ]


class QueueProbe:
    """Passive declares of the queues a worker consumes, on a channel of its own
    (opened at the first look). By the thread holding the consumer loop's turn."""

    def __init__(self, connection: Any, config: WorkerConfig, state: WorkerState) -> None:
        self.connection, self.config, self.state = connection, config, state
        self._channel: Any = None

    def counts(self) -> list[tuple[int, int]]:
        """Messages ready and consumers, of each queue (one not there is left out)."""
        counts = []
        for queue in wanted_queues(self.config, self.state):
            if self._channel is None:
                self._channel = self.connection.channel()
            try:
                ok = self._channel.queue_declare(queue=queue.name, passive=True)
            except tuple(self.connection.channel_errors):  # not there: closed and reopened
                if not getattr(self._channel, "is_open", False):
                    self._channel = None
                continue
            counts.append((ok.message_count, ok.consumer_count))
        return counts

    def backlog(self) -> int:
        """Messages ready in the queues, not yet sent to any consumer."""
        return sum(ready for ready, _ in self.counts())

    def shared(self) -> bool:
        """Whether another consumer takes from any of the queues (each counts this one)."""
        return any(consumers > 1 for _, consumers in self.counts())


class Subscription:
    """Opens a channel on `connection`, sets its prefetch count and consumes the
    configured queues (with those added and without those cancelled since)."""

    def __init__(
        self,
        connection: Any,
        config: WorkerConfig,
        state: WorkerState,
        on_message: Callable[[Any], None],
    ) -> None:
        self.connection = connection
        self.state = state
        self.default_queue = config.queues[0]
        self.channel = connection.channel()
        self.acks = Acks(self.channel, coalesce=connection.transport.driver_type == "amqp")
        queues = wanted_queues(config, state)
        self.qos = QoS(self._set_prefetch, config.prefetch_count)
        self.qos.update()
        self.paused = False  # cancelled, until `resume`: an added queue waits for it
        self.consumer = Consumer(self.channel, queues, on_message=on_message, no_ack=False)
        self.consumer.consume()

    def publish_back(self, message: Any, delivery_info: Mapping[str, Any]) -> None:
        """Publish `message` (a `protocol` message) to where the delivery that came
        with `delivery_info` was sent."""
        producer = self.connection.Producer(self.channel)
        producer.publish(
            message.body,
            exchange=delivery_info.get("exchange", ""),
            routing_key=delivery_info.get("routing_key", self.default_queue),
            serializer="json",
            headers=message.headers,
            **message.properties,
        )

    def queues(self) -> list[Any]:
        """The queues consumed now."""
        return list(self.consumer.queues or ())

    def add_queue(self, name: str, exchange: str, kind: str, routing_key: str) -> None:
        """Declare `name` and consume it too, now and after reconnects."""
        self.state.cancelled_queues.discard(name)
        self.state.added_queues[name] = (exchange, kind, routing_key)
        if any(q.name == name for q in self.queues()):
            return
        queue = Queue(name, Exchange(exchange, kind), routing_key=routing_key)
        self.consumer.add_queue(queue)
        if not self.paused:
            self.consumer.consume()

    def cancel_queue(self, name: str) -> bool:
        """Stop consuming `name`, now and after reconnects; False if not consumed."""
        if not any(q.name == name for q in self.queues()):
            return False
        self.state.cancelled_queues.add(name)
        self.state.added_queues.pop(name, None)
        self.consumer.cancel_by_queue(name)
        return True

    def cancel(self) -> None:
        """Stop consuming every queue; what is reserved stays unacknowledged. Deliveries
        the broker sent before it confirmed reach `on_message` before this returns."""
        self.paused = True
        self.consumer.cancel()

    def resume(self) -> None:
        """Consume again every queue consumed before `cancel`, and those added since."""
        self.paused = False
        self.consumer.consume()

    def restore_unacked(self) -> None:
        """Give unacknowledged messages back now (virtual transports such as Redis
        otherwise hold them until their visibility timeout); AMQP brokers do it
        themselves when the connection drops."""
        restore = getattr(getattr(self.channel, "qos", None), "restore_unacked_once", None)
        if not callable(restore):
            return
        # First stop the loop taking (and settle its acks), and cut the channel's own
        # Redis connections: a take, or a BRPOP still blocked in the server, would
        # bring a restored message straight back into this dying worker.
        stop_taking = getattr(self.channel, "stop_taking", None)
        if callable(stop_taking):
            stop_taking()
        pool = getattr(getattr(self.channel, "client", None), "connection_pool", None)
        if pool is not None:
            pool.disconnect()
        restore()

    def _set_prefetch(self, prefetch_count: int) -> None:
        # RabbitMQ 3.3+ applies a per-consumer (global=False) limit only to consumers
        # created after it, so a raised count would never reach ours; its global=True
        # is the channel-wide limit AMQP's spec calls per-consumer. As Celery does.
        shared = not self.connection.qos_semantics_matches_spec
        self.channel.basic_qos(0, prefetch_count, shared)
