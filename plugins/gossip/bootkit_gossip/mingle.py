"""``mingle.sync``: at consumer start, swap revoked task ids and clocks with the workers
already running, waiting only for the ones the broker says are there.

Celery sends its ``hello`` and always waits a full second for replies. Here the wait
ends as soon as every expected peer replied:

- AMQP: the peers are the other consumers of this worker's task queues (it does not
  consume them yet); a passive declare gives their count before the hello goes out,
  and with none the hello is not sent at all. Any worker's reply counts: the hello
  reaches every worker of the vhost, and every one got the same broadcast revokes.
- Redis: kombu subscribes to the pidbox fanout with PSUBSCRIBE, which
  ``PUBSUB NUMSUB`` does not count; the PUBLISH of the hello answers how many
  subscribers it reached, and `pidbox.call` waits for that many.
- Other transports (the embedded filesystem broker): the wait ends once no reply came
  for `QUIET` seconds (bootkit workers poll such transports every 0.05 s).

``--mingle-timeout`` caps the wait in every case.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bootkit import Context, Step, StopReason, logger
from bootkit_amqp_consumer.errors import BrokerConnectionLostError
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pidbox import call
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.steps import Connection
from bootkit_gossip.plugin import DEFAULT_MINGLE_TIMEOUT

REVOKED_MAX = 10_000  # revoked ids sent in our hello: the newest
QUIET = 0.1  # unknown number of peers: stop once no reply came for this long


class Mingle(Step):
    """Sends Celery's ``hello`` before task consumption starts; merges the replies."""

    name = "mingle.sync"
    blueprint = "consumer"
    requires = ("amqp.connection",)
    # Before amqp.tasks: the consumer connection is used by one thread at a time, and
    # revoked ids must be known before the first task arrives.
    before = ("amqp.tasks",)

    def start(self, ctx: Context) -> None:
        config = ctx.get(WorkerConfig)
        state = ctx.get(WorkerState)
        connection = ctx.get(Connection).kombu
        timeout = float(ctx.settings.option("mingle_timeout", DEFAULT_MINGLE_TIMEOUT))
        log = logger().bind(hostname=config.hostname)
        began = time.monotonic()
        try:
            expected, rule = expected_peers(connection, config.queues)
            replies = (
                []
                if expected == 0
                else call(
                    connection,
                    "hello",
                    {
                        "from_node": config.hostname,
                        "revoked": state.revoked_wire(REVOKED_MAX),
                    },
                    timeout=timeout,
                    expected=expected,
                    quiet=QUIET,
                    clock=state.clock.forward(),
                )
            )
        except tuple(connection.connection_errors) as exc:
            raise BrokerConnectionLostError(f"mingle: {type(exc).__name__}: {exc}") from exc
        except tuple(connection.channel_errors) as exc:  # best effort: boot on without it
            log.warning("mingle_failed", error=f"{type(exc).__name__}: {exc}")
            return
        nodes, new = [], 0
        for reply in replies:
            for node, answer in reply.items():
                if node == config.hostname or not isinstance(answer, dict):
                    continue
                nodes.append(node)
                state.clock.adjust(answer.get("clock"))
                new += state.merge_revoked(revoked_ids(answer.get("revoked")))
        log.info(
            "mingle_synced",
            nodes=sorted(nodes),
            revoked_new=new,
            expected=expected,
            rule=rule,
            clock=state.clock.value,
            seconds=round(time.monotonic() - began, 6),
        )

    def stop(self, ctx: Context, reason: StopReason) -> None:
        """Nothing to undo: what mingle learnt stays in the worker state."""


def expected_peers(connection: Any, queues: tuple[str, ...]) -> tuple[int | None, str]:
    """How many workers should answer the hello (None: the broker cannot say before it
    is sent), and the rule that told (logged with ``mingle_synced``)."""
    driver = connection.transport.driver_type
    if driver == "redis":
        return None, "publish_reached"
    if driver != "amqp":
        return None, "quiet_window"
    most = 0
    for name in queues:
        channel = connection.channel()
        try:
            _, _, consumers = channel.queue_declare(name, passive=True)
            most = max(most, int(consumers))
        except connection.channel_errors:
            pass  # not declared yet: nobody consumes it
        finally:
            with contextlib.suppress(Exception):  # a failed passive declare closed it
                channel.close()
    return most, "queue_consumers"


def revoked_ids(revoked: object) -> dict[str, Any]:
    """A hello reply's revoked ids in the form `WorkerState.merge_revoked` takes.

    bootkit and Celery before 5.7 reply ``{id: [revoked at, id]}``; Celery 5.7 replies
    a list of ids, oldest first, whose stamps it drops: those are kept from now on,
    as Celery keeps them.
    """
    if isinstance(revoked, dict):
        return revoked
    if isinstance(revoked, list):
        now = time.time()
        return {task_id: now for task_id in revoked if isinstance(task_id, str)}
    return {}
