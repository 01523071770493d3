"""What to declare for a queue, in which order, and how an existing queue is adopted.

The decisions of both drivers' declarations (``pika_declare.py``, ``aio_declare.py``),
made here once as plain data: each twin turns the steps into its client's calls and
does nothing else. No client library is imported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ...lanes import Lane
from .topology import DELAY_REDECLARE, Declared, Topology, own_dlx

__all__ = [
    "Bind",
    "Exchange",
    "Queue",
    "Rules",
    "Step",
    "base_steps",
    "delay_steps",
    "delays_to_declare",
    "lane_bind",
    "lanes_to_declare",
]

log = logging.getLogger("workq.rabbitmq")


@dataclass(frozen=True, slots=True)
class Exchange:
    """A durable exchange of ``kind``."""

    name: str
    kind: Literal["direct", "fanout", "headers"]


@dataclass(frozen=True, slots=True)
class Queue:
    """A durable queue with ``arguments``."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Bind:
    """A binding of ``queue`` to ``exchange``."""

    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] | None = None


Step = Exchange | Queue | Bind


def base_steps(topo: Topology) -> list[Step]:
    """Everything a queue needs besides its lane queues, in order. The default lane
    queue is declared (or adopted) before these, so a declaration that cannot have it
    leaves nothing behind.

    >>> [type(s).__name__ for s in base_steps(Topology("q", "quorum", 9))]
    ['Exchange', 'Exchange', 'Exchange', 'Queue', 'Bind', 'Bind', 'Queue']
    """
    return [
        Exchange(topo.exchange, "direct"),
        Exchange(topo.dlx, "fanout"),
        Exchange(topo.delay_exchange, "headers"),
        Queue(topo.dlq, topo.queue_args()),
        Bind(topo.dlq, topo.dlx, ""),
        lane_bind(topo, Lane(topo.name)),
        Queue(topo.meta, topo.queue_args()),
    ]


def lane_bind(topo: Topology, lane: Lane) -> Bind:
    """The binding that routes the lane's key from the queue's exchange to its queue."""
    return Bind(topo.lane_queue(lane), topo.exchange, topo.routing_key(lane))


def delay_steps(topo: Topology, ms: int) -> list[Step]:
    """The TTL queue of a delay bucket and its binding to the delay exchange."""
    name = topo.delay_queue(ms)
    return [
        Queue(name, topo.delay_args(ms)),
        Bind(name, topo.delay_exchange, "", topo.delay_binding(ms)),
    ]


def lanes_to_declare(topo: Topology, lanes: Iterable[Lane], declared: Declared) -> list[Lane]:
    """The lanes (as stored) whose queues this connection has not declared yet, each
    queue once, in a stable order."""
    out: dict[str, Lane] = {}
    for lane in sorted(lanes, key=lambda ln: (ln.tenant or "", ln.priority)):
        name = topo.lane_queue(lane)
        if name not in out and not declared.fresh(name):
            out[name] = topo.physical(lane)
    return list(out.values())


def delays_to_declare(topo: Topology, delays: Iterable[int], declared: Declared) -> list[int]:
    """The delay buckets whose queues are due a declaration (new, or old enough that
    they might expire while in use)."""
    return [
        ms for ms in sorted(delays) if not declared.fresh(topo.delay_queue(ms), DELAY_REDECLARE)
    ]


class Rules:
    """The adoption bookkeeping both drivers mix in."""

    #: Lane queues that existed with other arguments, and their own dead-letter
    #: exchange (None: workq's dead-letter queue serves them).
    adopted: dict[str, str | None]
    #: Lane queues this driver has declared or adopted, across reconnects.
    lanes_made: set[str]

    def _adopt(self, topo: Topology, queue: str, why: str, probe_reply: str | None) -> None:
        """Record ``queue`` as adopted as it is (its declaration was refused: ``why``).
        ``probe_reply`` is the refusal of a declaration with :data:`DLX_PROBE` as its
        dead-letter exchange, which names the queue's own (None: no refusal)."""
        dlx = None if probe_reply is None else own_dlx(probe_reply)
        self.adopted[queue] = None if dlx == topo.dlx else dlx
        self.lanes_made.add(queue)
        log.info(
            "queue %r: lane queue %r exists with other arguments (%s); adopted as it is, "
            "dead letters going to %s",
            topo.name,
            queue,
            why,
            f"its own exchange {dlx!r}" if self.adopted[queue] else repr(topo.dlq),
        )
