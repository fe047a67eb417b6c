"""The worker's settings: the options it adds to bootkit, and the frozen view steps use."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bootkit import ConfigError, Option, Settings

POOLS = ("prefork", "threads", "solo")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")  # where a closed connection requeues its messages
REDIS_SCHEMES = ("redis", "rediss")  # where unacked messages come back after a visibility timeout
DEFAULT_QUEUE = "celery"
# Messages reserved per pool slot. A consumer that runs its tasks inline (solo, a prefork
# child) reserves more on AMQP, where it hands the reserve back once a task has run 0.1 s
# (keeper) and the broker requeues it at once if the worker dies: there a deeper reserve
# hides the broker's round trip between short tasks, and costs only the wait behind
# tasks each under 0.1 s (for up to 15 of them).
PREFETCH_MULTIPLIER = 4
INLINE_PREFETCH_MULTIPLIER = 16

OPTIONS = [
    Option("app", "The task app, as MODULE:ATTRIBUTE.", short="-A", metavar="MODULE:APP"),
    Option(
        "broker",
        "Broker URL (amqp://, redis://, any kombu URL); default: filesystem:// in the state folder.",
        short="-b",
        metavar="URL",
    ),
    Option(
        "result_backend",
        "Result backend URL (redis://...); default: files in the state folder with the default broker.",
        metavar="URL",
    ),
    Option(
        "queues",
        "Queues to consume, comma-separated (repeatable).",
        short="-Q",
        multiple=True,
        metavar="NAMES",
    ),
    Option(
        "concurrency",
        "Tasks run at once (default: number of CPUs).",
        type=int,
        short="-c",
        metavar="N",
    ),
    Option("pool", "Execution pool.", short="-P", choices=POOLS, default="prefork"),
    Option(
        "prefork_intake",
        "Who takes tasks from the broker with -P prefork: each child on a connection of "
        "its own (children; AMQP brokers only), or the parent, handing each to an idle "
        "child (parent). auto: children on an AMQP broker, else parent.",
        choices=("auto", "parent", "children"),
        default="auto",
    ),
    Option("hostname", "Node name (default bootkit@HOST).", short="-n", metavar="NAME"),
    Option(
        "prefetch_multiplier",
        f"Messages reserved per pool slot (default {PREFETCH_MULTIPLIER}; "
        f"{INLINE_PREFETCH_MULTIPLIER} on an AMQP broker with -P solo or prefork "
        "children, which hand back what they reserved once a task has run 0.1 s, and "
        "whose reserve the broker requeues at once if the worker dies).",
        type=int,
        metavar="N",
    ),
    Option(
        "acks_late", "Acknowledge after the task ran, for every task.", type=bool, default=False
    ),
    Option(
        "accept_content",
        "Content types accepted (repeatable); pickle only if you trust every producer.",
        multiple=True,
        default=("application/json",),
        metavar="TYPE",
    ),
    Option(
        "max_message_size",
        "Largest message body in bytes; larger ones are rejected.",
        type=int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
    ),
    Option(
        "max_redeliveries",
        "Times a task whose process died is requeued before it is rejected.",
        type=int,
        default=3,
        metavar="N",
    ),
]

OPTIONS.append(
    Option(
        "broker_heartbeat",
        "AMQP heartbeat in seconds: a silent broker is noticed within about twice this; 0 turns it off.",
        type=float,
        default=10.0,
        metavar="SECONDS",
    )
)

OPTIONS.append(
    Option(
        "visibility_timeout",
        "Redis: seconds a message may stay unacknowledged before it goes back to its "
        "queue for another worker (its worker died); longer than any task runs with late "
        "ack plus its wait in the reserve. Swept every tenth of it (1 to 10 s).",
        type=float,
        default=3600.0,
        metavar="SECONDS",
    )
)

DESTRUCTIVE = (
    "shutdown",
    "terminate",
    "pool_grow",
    "pool_shrink",
    "rate_limit",
    "time_limit",
    "add_consumer",
    "cancel_consumer",
)
OPTIONS += [
    Option(
        "task_events",
        "Send task events (task-received, task-succeeded, ...).",
        short="-E",
        type=bool,
        default=False,
    ),
    Option(
        "control_allow",
        "Destructive control commands this worker obeys (repeatable, comma-separated): "
        + ", ".join(DESTRUCTIVE)
        + ", or all. Default: none.",
        multiple=True,
        metavar="COMMANDS",
    ),
]

_CONTENT_ALIASES = {
    "json": "application/json",
    "pickle": "application/x-python-serialize",
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
}


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker's steps read, derived once from the settings."""

    app: str | None
    broker: str
    transport_options: dict[str, object]
    result_backend: str | None
    queues: tuple[str, ...]
    concurrency: int
    pool: str
    hostname: str
    prefetch_multiplier: int
    acks_late: bool
    accept_content: frozenset[str]
    max_message_size: int
    max_redeliveries: int
    state_dir: Path
    task_events: bool = False
    control_allow: frozenset[str] = frozenset()
    broker_heartbeat: float = 10.0
    prefork_intake: str = "parent"  # or "children" (see pool_children); "auto" resolved

    @property
    def amqp(self) -> bool:
        """The broker is an AMQP one (RabbitMQ): a closed connection requeues."""
        return is_amqp(self.broker)

    @property
    def prefetch_count(self) -> int:
        return self.concurrency * self.prefetch_multiplier

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        """Raises: ConfigError naming the option."""
        broker = settings.option("broker")
        transport_options: dict[str, object] = {}
        backend = settings.option("result_backend")
        if not broker:
            broker, transport_options = embedded_broker(settings.state_dir)
            backend = backend or f"file://{settings.state_dir / 'results'}"
        queues = tuple(
            q.strip()
            for spec in settings.option("queues", ())
            for q in spec.split(",")
            if q.strip()
        )
        concurrency = settings.option("concurrency") or os.cpu_count() or 1
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
        pool = settings.option("pool", "prefork")
        if pool == "solo" and settings.option("concurrency") not in (None, 1):
            raise ConfigError("-P solo runs one task at a time; drop -c or use -P threads")
        if pool == "solo":
            concurrency = 1
        intake = settings.option("prefork_intake", "auto")
        amqp = is_amqp(broker)
        if intake == "auto":
            intake = "children" if pool == "prefork" and amqp else "parent"
        if intake == "children" and pool != "prefork":
            raise ConfigError(f"--prefork-intake children needs -P prefork, not -P {pool}")
        if intake == "children" and not amqp:
            raise ConfigError(
                "--prefork-intake children needs an AMQP broker such as RabbitMQ: on others "
                "a child that dies keeps the tasks it reserved (until Redis's visibility "
                "timeout) or loses them (the embedded broker)"
            )
        visibility = float(settings.option("visibility_timeout", 3600.0))
        if visibility <= 0:
            raise ConfigError(f"--visibility-timeout must be above 0, got {visibility}")
        if broker.split("://", 1)[0] in REDIS_SCHEMES:
            transport_options = {**transport_options, "visibility_timeout": visibility}
        multiplier = settings.option("prefetch_multiplier")
        if multiplier is None:
            inline = pool == "solo" or intake == "children"  # see keeper: they hand back
            multiplier = INLINE_PREFETCH_MULTIPLIER if inline and amqp else PREFETCH_MULTIPLIER
        if multiplier < 1:
            raise ConfigError(f"--prefetch-multiplier must be at least 1, got {multiplier}")
        return cls(
            app=settings.option("app"),
            broker=broker,
            transport_options=transport_options,
            result_backend=backend,
            queues=queues or (DEFAULT_QUEUE,),
            concurrency=concurrency,
            pool=pool,
            hostname=settings.option("hostname") or f"bootkit@{socket.gethostname()}",
            prefetch_multiplier=multiplier,
            acks_late=bool(settings.option("acks_late", False)),
            accept_content=accepted(settings.option("accept_content", ("application/json",))),
            max_message_size=settings.option("max_message_size", 16 * 1024 * 1024),
            max_redeliveries=settings.option("max_redeliveries", 3),
            state_dir=settings.state_dir,
            task_events=bool(settings.option("task_events", False)),
            control_allow=control_allow(settings.option("control_allow", ())),
            broker_heartbeat=float(settings.option("broker_heartbeat", 10.0)),
            prefork_intake=intake,
        )


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0] in AMQP_SCHEMES


def control_allow(specs: tuple[str, ...]) -> frozenset[str]:
    """The allowlist from comma-separated specs. Raises: ConfigError on an unknown name."""
    names = frozenset(n.strip() for spec in specs for n in spec.split(",") if n.strip())
    unknown = sorted(names - {*DESTRUCTIVE, "all"})
    if unknown:
        raise ConfigError(
            f"--control-allow: unknown command {unknown[0]!r}; choose from "
            + ", ".join((*DESTRUCTIVE, "all"))
        )
    return names


def accepted(names: tuple[str, ...]) -> frozenset[str]:
    """Content types from names or aliases (json, pickle, yaml, msgpack)."""
    return frozenset(_CONTENT_ALIASES.get(n, n) for n in names)


def embedded_broker(state_dir: Path) -> tuple[str, dict[str, object]]:
    """kombu's filesystem transport in the state folder: no server, works across processes."""
    queue = state_dir / "broker" / "queue"
    control = state_dir / "broker" / "control"
    queue.mkdir(parents=True, exist_ok=True)
    control.mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
        "polling_interval": 0.05,
    }
