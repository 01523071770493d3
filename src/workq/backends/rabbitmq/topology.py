"""How a workq queue maps onto RabbitMQ objects, shared by the pika and aio-pika drivers.

For a queue ``q`` (no client library is imported here):

- exchange ``workq.q`` (direct): routing key = tenant (``""`` for the default lane), with
  ``.pN`` appended for priority lanes of quorum queues;
- lane queues: ``q`` (default lane), ``q.t.TENANT``; quorum priority lanes add ``.pN``;
- ``workq.q.dlx`` (fanout) → ``q.dlq``: the dead-letter exchange and queue;
- ``workq.q.delay`` (headers) → ``q.delay.MS``: TTL queues dead-lettering back to ``workq.q``;
- ``q.meta``: the queue's durable registry (a queue of the same type holding a few
  records): its spec and every lane and delay queue ever made, so consumers with
  ``tenants=None`` find lanes made after they started. (A stream would be the natural
  choice, but a single-node stream killed hard stays down in RabbitMQ 3.10.)
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ...errors import ConfigurationError
from ...lanes import Lane
from ...spec import QueueSpec

__all__ = [
    "DELAY",
    "DELAY_REDECLARE",
    "DLX_PROBE",
    "OPTIONS",
    "Declared",
    "QueueType",
    "Registry",
    "Topology",
    "check_declared",
    "config_error",
    "delay_ms",
    "delay_record",
    "lane_record",
    "meta_queue",
    "normalized",
    "own_dlx",
    "queue_type",
    "spec_record",
]

QueueType = Literal["quorum", "classic"]
OPTIONS = frozenset({"queue_type"})
#: The delay bucket header the delay exchange routes on. Not ``x-``-prefixed: a headers
#: exchange ignores ``x-`` arguments when matching, so such a binding would match anything.
DELAY = "workq-delay-ms"
#: A delay queue is deleted by the broker once unused this long beyond its TTL.
DELAY_EXPIRES_MARGIN = 600.0
#: Re-declare a delay queue before half its expiry has passed, so it never expires
#: while holding messages (publishing does not count as use).
DELAY_REDECLARE = DELAY_EXPIRES_MARGIN / 2


_PRIORITY_SUFFIX = re.compile(r"\.p(\d+)$")
#: A dead-letter exchange no queue has: declaring an existing queue with it makes
#: RabbitMQ name the queue's own dead-letter exchange in its refusal (:func:`own_dlx`).
DLX_PROBE = "workq.probe.dlx"


def own_dlx(reply_text: str) -> str | None:
    """The dead-letter exchange a 406 refusal of a :data:`DLX_PROBE` declaration says
    the queue has (None: none, or the refusal is about something else).

    >>> own_dlx("... inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost "
    ...         "'/': received 'workq.probe.dlx' but current is 'their.dlx'")
    'their.dlx'
    """
    if "'x-dead-letter-exchange'" not in reply_text:
        return None
    m = re.search(r"but current is (?:the value )?'([^']*)'", reply_text)
    return m.group(1) if m else None


def queue_type(spec: QueueSpec, default: QueueType) -> QueueType:
    """The queue type a spec asks for, checking its options."""
    spec.check_options("rabbitmq", OPTIONS)
    value = spec.options.get("queue_type", default)
    if value not in ("quorum", "classic"):
        raise ConfigurationError(
            f"queue {spec.name!r}: queue_type={value!r} is not allowed; use 'quorum' or 'classic'"
        )
    qt: QueueType = value
    return qt


def meta_queue(name: str) -> str:
    """The registry queue of queue ``name`` (see the module docstring)."""
    return f"{name}.meta"


@dataclass(frozen=True, slots=True)
class Topology:
    """Names and arguments of the RabbitMQ objects behind one workq queue."""

    name: str
    kind: QueueType
    max_priority: int
    #: Prepended to every RabbitMQ object's name (the ``queue_prefix`` setting).
    prefix: str = ""

    @classmethod
    def of(cls, spec: QueueSpec, default: QueueType, prefix: str = "") -> Topology:
        return cls(spec.name, queue_type(spec, default), spec.max_priority, prefix)

    @property
    def base(self) -> str:
        """The RabbitMQ name of the default lane queue: the queue's name, prefixed."""
        return self.prefix + self.name

    @property
    def native_priority(self) -> bool:
        return self.kind == "classic" and self.max_priority > 0

    @property
    def exchange(self) -> str:
        return f"workq.{self.base}"

    @property
    def dlx(self) -> str:
        return f"workq.{self.base}.dlx"

    @property
    def dlq(self) -> str:
        return f"{self.base}.dlq"

    @property
    def delay_exchange(self) -> str:
        return f"workq.{self.base}.delay"

    @property
    def meta(self) -> str:
        return meta_queue(self.base)

    def physical(self, lane: Lane) -> Lane:
        """The lane as stored: classic queues hold every priority in one queue."""
        if self.kind == "classic":
            return Lane(self.name, lane.tenant, 0)
        return lane

    def lane_queue(self, lane: Lane) -> str:
        lane = self.physical(lane)
        name = self.base if lane.tenant is None else f"{self.base}.t.{lane.tenant}"
        return f"{name}.p{lane.priority}" if lane.priority else name

    def lane_of_queue(self, queue: str) -> Lane | None:
        """The lane whose queue is named ``queue`` (as stored), or None if it is not one."""
        rest = queue[len(self.base) :] if queue.startswith(self.base) else None
        if rest is None:
            return None
        priority = 0
        if self.kind == "quorum" and (m := _PRIORITY_SUFFIX.search(rest)):
            priority, rest = int(m.group(1)), rest[: m.start()]
        if rest == "":
            return Lane(self.name, None, priority)
        if rest.startswith(".t.") and len(rest) > 3:
            return Lane(self.name, rest[3:], priority)
        return None

    def routing_key(self, lane: Lane) -> str:
        lane = self.physical(lane)
        key = lane.tenant or ""
        return f"{key}.p{lane.priority}" if lane.priority else key

    def queue_args(self) -> dict[str, Any]:
        """Arguments of the dead-letter and registry queues: just the queue type."""
        # No quorum "at-least-once" dead-letter strategy on any queue: on RabbitMQ 3.10 it
        # made a queue nack every publish after its leader was killed, and dead-letter some
        # expired delay messages twice. workq dead-letters by publishing (confirmed) to the
        # dead-letter exchange itself, so it does not need it.
        return {"x-queue-type": self.kind}

    def lane_args(self) -> dict[str, Any]:
        args = self.queue_args()
        args["x-dead-letter-exchange"] = self.dlx
        if self.native_priority:
            args["x-max-priority"] = self.max_priority
        return args

    def delay_queue(self, ms: int) -> str:
        return f"{self.base}.delay.{ms}"

    def delay_args(self, ms: int) -> dict[str, Any]:
        args = self.queue_args()
        args["x-message-ttl"] = ms
        args["x-dead-letter-exchange"] = self.exchange
        args["x-expires"] = ms + int(DELAY_EXPIRES_MARGIN * 1000) * 2
        if self.native_priority:
            args["x-max-priority"] = self.max_priority
        return args

    def known_lanes(self, registry: Registry) -> list[Lane]:
        """The lanes ``registry`` lists and the default lane, as stored, in a stable order.

        A consumer of every tenant asks for this every lane refresh; lanes are only ever
        added to a registry, so while their count holds the last list is handed back (the
        same object, which the core then does not compare again)."""
        listed = registry.listed
        if listed is not None and listed[0] is self and listed[1] == len(registry.lanes):
            return listed[2]
        found = {self.physical(lane) for lane in registry.lanes} | {Lane(self.name)}
        lanes = sorted(found, key=lambda ln: (ln.tenant or "", -ln.priority))
        registry.listed = (self, len(registry.lanes), lanes)
        return lanes

    def levels(self, lanes: Sequence[Lane]) -> list[list[str]]:
        """The lane queues behind ``lanes``, grouped by priority (highest first); within a
        level in the order given. Empty if ``lanes`` is."""
        levels: dict[int, list[str]] = {}
        seen: set[str] = set()
        for lane in lanes:
            q = self.lane_queue(lane)
            if q not in seen:
                seen.add(q)
                levels.setdefault(self.physical(lane).priority, []).append(q)
        return [levels[p] for p in sorted(levels, reverse=True)]

    @staticmethod
    def delay_binding(ms: int) -> dict[str, Any]:
        return {"x-match": "all", DELAY: str(ms)}


@dataclass
class Declared:
    """Names this connection has declared, and when (a reconnect starts a new one)."""

    names: dict[str, float] = field(default_factory=dict)

    def fresh(self, name: str, max_age: float = float("inf")) -> bool:
        at = self.names.get(name)
        return at is not None and time.monotonic() - at < max_age

    def mark(self, name: str) -> None:
        self.names[name] = time.monotonic()


def delay_ms(delay: float) -> int:
    """The delay bucket for ``delay`` seconds: rounded up to two significant digits of ms.

    Rounding up keeps "not before"; two digits keep the number of delay queues small.

    >>> delay_ms(1.234), delay_ms(0.05), delay_ms(300)
    (1300, 50, 300000)
    """
    ms = max(math.ceil(delay * 1000), 1)
    if ms < 100:
        return ms
    scale = 10 ** (len(str(ms)) - 2)
    return int(math.ceil(ms / scale) * scale)


# --- the registry records in the q.meta queue ----------------------------------------


def _spec(spec: QueueSpec, implicit: bool) -> dict[str, Any]:
    return {"kind": "spec", "implicit": implicit, "spec": asdict(spec)}


def _lane(lane: Lane) -> dict[str, Any]:
    return {"kind": "lane", "tenant": lane.tenant, "priority": lane.priority}


def _delay(ms: int) -> dict[str, Any]:
    return {"kind": "delay", "ms": ms}


def spec_record(spec: QueueSpec, kind: QueueType, implicit: bool) -> bytes:
    return json.dumps(_spec(normalized(spec, kind), implicit)).encode()


def lane_record(lane: Lane) -> bytes:
    return json.dumps(_lane(lane)).encode()


def delay_record(ms: int) -> bytes:
    return json.dumps(_delay(ms)).encode()


#: Registry records remembered as read (a registry is one merged record, now and then
#: a few more while writers race).
_REMEMBERED = 8


@dataclass
class Registry:
    """What a queue's registry (``q.meta``) says so far: its spec, lanes and delay queues."""

    name: str
    explicit: QueueSpec | None = None
    implicit: QueueSpec | None = None

    def __post_init__(self) -> None:
        self.lanes: set[Lane] = set()
        self.delays: set[int] = set()
        #: ``Topology.known_lanes``'s last answer: (topology, lane count, lanes).
        self.listed: tuple[Topology, int, list[Lane]] | None = None
        # The registry is re-read every lane refresh and is usually unchanged: a record
        # read before adds nothing (every fact only adds), so it is not parsed again.
        self._read: dict[bytes, None] = {}

    def add(self, body: bytes) -> None:
        if body in self._read:
            return
        try:
            record = json.loads(body)
        except ValueError:
            return  # not ours: ignore rather than break every consumer
        self._add(record)
        self._read[body] = None
        if len(self._read) > _REMEMBERED:
            del self._read[next(iter(self._read))]

    def _add(self, record: Any) -> None:
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "set":
            for item in record.get("records", []):
                self._add(item)
        elif kind == "lane":
            self.lanes.add(Lane(self.name, record["tenant"], int(record["priority"])))
        elif kind == "delay":
            self.delays.add(int(record["ms"]))
        elif kind == "spec":
            spec = QueueSpec(**record["spec"])
            if record.get("implicit"):
                if self.implicit is None:
                    self.implicit = spec
            elif self.explicit is None:
                self.explicit = spec

    @property
    def spec(self) -> QueueSpec | None:
        return self.explicit or self.implicit

    def dump(self) -> bytes:
        """Everything known, as one record."""
        records: list[Any] = []
        for spec, implicit in ((self.explicit, False), (self.implicit, True)):
            if spec is not None:
                records.append(_spec(spec, implicit))
        records.extend(
            _lane(lane)
            for lane in sorted(self.lanes, key=lambda ln: (ln.tenant or "", ln.priority))
        )
        records.extend(_delay(ms) for ms in sorted(self.delays))
        return json.dumps({"kind": "set", "records": records}).encode()


def normalized(spec: QueueSpec, kind: QueueType) -> QueueSpec:
    """``spec`` with its queue type written out, as the registry stores it."""
    return replace(spec, options={**spec.options, "queue_type": kind})


def check_declared(stored: QueueSpec, spec: QueueSpec, kind: QueueType) -> None:
    """Raise ``ConfigurationError`` naming each setting ``spec`` changes from ``stored``."""
    stored.check_same(normalized(spec, kind))


def config_error(topo_name: str, reply_text: str) -> ConfigurationError:
    """A ``ConfigurationError`` from a 406 PRECONDITION_FAILED, naming the argument."""
    match = re.search(r"inequivalent arg '([^']+)'", reply_text)
    what = f"argument {match.group(1)!r}" if match else "its arguments"
    return ConfigurationError(
        f"queue {topo_name!r} exists in RabbitMQ with a different {what}: {reply_text}. "
        "Declare it the same way everywhere (queue_type, max_priority), or delete and "
        "re-create it"
    )
