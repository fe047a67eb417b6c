"""Settling task messages: acknowledge, reject or requeue each delivery exactly once.

On AMQP, acks wait in a buffer until `Acks.flush`, which sends the longest run of
acked deliveries from the oldest unsettled one as a single ``basic.ack`` with
``multiple`` set, and the rest one by one. A multiple-ack covers every delivery up
to its tag, so one is only sent when no delivery below that tag is still open: a
message waiting for a pool slot, held for its ETA or running with a late ack is
never acknowledged by accident. Rejects and requeues go out at once.

The consumer flushes before it hands early-acked tasks to the pool (so their ack is
on the wire before they can start) and before it waits for the broker; everything
else rides along. Other transports (Redis, the embedded broker) settle at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from bootkit_amqp_consumer.transport import ack_sender


class Acks:
    """Settles the deliveries of one channel, in the order they were received."""

    def __init__(self, channel: Any, *, coalesce: bool) -> None:
        self.coalesce = coalesce
        self._send = ack_sender(channel) if coalesce else None
        self._open: deque[int] = deque()  # delivery tags not settled on the wire, oldest first
        self._acked: dict[int, str] = {}  # tag -> task id, acked here but not yet sent
        self._settled: set[int] = set()  # tags in _open settled out of order

    def unsent(self) -> list[str]:
        """The task ids acknowledged here whose ack has not been sent yet."""
        return list(self._acked.values())

    def received(self, message: Any) -> None:
        """`message` arrived; every delivery on the channel passes through here."""
        if self.coalesce:
            self._open.append(message.delivery_tag)

    def ack(self, message: Any, task_id: str) -> None:
        """Acknowledge `message`, task `task_id` (sent by the next flush when coalescing)."""
        if self.coalesce:
            self._acked[message.delivery_tag] = task_id
        else:
            message.ack()

    def forget(self, message: Any) -> None:
        """Take back the ack of `message` if it was not sent yet (its connection failed
        before the flush went out): it is no longer among the `unsent`."""
        self._acked.pop(message.delivery_tag, None)

    def reject(self, message: Any, *, requeue: bool) -> None:
        """Reject `message` now; requeued or dropped (dead-lettered when the queue has
        a dead-letter exchange)."""
        if requeue:
            message.requeue()
        else:
            message.reject(requeue=False)
        if self.coalesce:
            self._settled.add(message.delivery_tag)

    def flush(self) -> None:
        """Send the acks waiting in the buffer."""
        if not self._acked:
            if self._settled:  # rejects alone: let the oldest open tag move on
                self._advance()
            return
        assert self._send is not None  # acks wait only when coalescing
        last = self._advance()
        if last is not None:
            self._send(last, True)
        for tag in self._acked:  # behind a delivery still open: one by one
            self._send(tag, False)
            self._settled.add(tag)
        self._acked.clear()

    def _advance(self) -> int | None:
        """Drop the settled and acked tags at the head of the open ones; the last of
        them that is acked here, if any."""
        acked, opened, settled = self._acked, self._open, self._settled
        last = None
        while opened:
            tag = opened[0]
            if tag in acked:
                last = tag
                del acked[tag]
            elif tag in settled:
                settled.discard(tag)
            else:
                break
            opened.popleft()
        return last
