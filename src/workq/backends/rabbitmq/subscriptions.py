"""What a RabbitMQ receiver subscribes to and holds: the decisions both receivers share.

A receiver keeps a push subscription (``basic.consume``) on every lane queue its
consumer reads, on one channel of its own. An idle consumer then costs the broker
nothing per lane, and a message in any lane is pushed at once, however many lanes there
are (polling them with ``basic.get`` cost broker CPU and latency in proportion to the
lane count: see the cost model in docs/performance.md).

The bound: each subscription is made with a per-consumer credit (``basic.qos``) of
``prefetch // lanes`` (at least 1), so the consumer holds at most ``prefetch`` plus one
per lane. RabbitMQ's channel-wide ("global") qos would make that exactly ``prefetch``,
but quorum queues refuse it (540 NOT_IMPLEMENTED closes the connection). What a lane
pushed waits here, per lane queue, and :meth:`Subscriptions.take` hands out only what
the consumer has room for, in the consumer's lane order (``workq.lanes.spread``): the
core decides priority and the tenants' turns, this module only follows its order.

This module does no I/O: ``receiver.py`` (pika; ``workq.aio`` consumers use it too) asks
it what to subscribe, cancel and give back, and tells it what was pushed.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ...driver import Received
from ...lanes import Lane, spread
from .topology import Topology

__all__ = ["Changes", "Subscriptions", "credit_for"]

_ids = itertools.count(1)
#: How long a lane queue the broker said does not exist is left out before it is
#: subscribed again (it may be made again by a publisher).
MISSING_RETRY = 10.0
_NO_QUEUE = re.compile(r"no queue '([^']+)'")


def credit_for(prefetch: int, lanes: int) -> int:
    """The per-subscription credit when a consumer of ``prefetch`` reads ``lanes`` lanes.

    >>> credit_for(100, 1), credit_for(100, 10), credit_for(10, 1000)
    (100, 10, 1)
    """
    return max(prefetch // max(lanes, 1), 1)


@dataclass(frozen=True, slots=True)
class Changes:
    """What to do on the channel before receiving: subscribe ``consume`` (with the
    per-consumer ``credit``, set first if it differs from the channel's), cancel
    ``cancel`` (lanes the consumer no longer reads)."""

    consume: list[str]
    cancel: list[str]
    credit: int
    #: Of ``consume``, those the broker said did not exist: check they exist again first.
    probe: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.consume or self.cancel)


class Subscriptions:
    """One receiver's subscriptions and what they pushed; not thread-safe (the sync
    receiver guards it with its condition, the async one runs on one loop)."""

    def __init__(self, topo: Topology, prefetch: int) -> None:
        self.topo = topo
        self.prefetch = prefetch
        self._prefix = f"workq.{next(_ids)}."
        self._count = itertools.count(1)
        #: Lane queue -> consumer tag, and back.
        self.tags: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        #: The per-consumer credit the channel gives new subscriptions (None: not set).
        self.credit: int | None = None
        self._buffers: dict[str, deque[Received]] = {}
        self._size = 0
        self._lanes_seen: Sequence[Lane] | None = None
        self._queues_seen: list[str] = []
        self._wanted: set[str] = set()
        #: Lane queues by priority level, highest first; and each queue's level.
        self._levels: list[tuple[int, list[str]]] = []
        self._level_of: dict[str, int] = {}
        #: Lane queues that may hold more than they pushed: they pushed (or answered a
        #: get) since a ``basic.get`` last found them empty.
        self.busy: set[str] = set()
        #: Busy lane queues a ``basic.get`` found empty once since they last pushed or
        #: answered one: not yet known empty (see :meth:`got`).
        self._empty_once: set[str] = set()
        #: Lane queues the broker said do not exist, and when.
        self.missing: dict[str, float] = {}

    def __len__(self) -> int:
        return self._size

    def reset(self) -> None:
        """The channel is gone: the broker has back everything it pushed."""
        self.tags.clear()
        self.queues.clear()
        self._buffers.clear()
        self._size = 0
        self.credit = None
        self.busy.clear()
        self._empty_once.clear()

    def _lane_queues(self, lanes: Sequence[Lane]) -> list[str]:
        # The core passes a new list each time; the lane set rarely changes.
        if lanes != self._lanes_seen:
            self._lanes_seen = list(lanes)
            levels: dict[int, list[str]] = {}
            for lane in lanes:
                physical = self.topo.physical(lane)
                q = self.topo.lane_queue(physical)
                self._level_of[q] = physical.priority
                if q not in levels.get(physical.priority, ()):
                    levels.setdefault(physical.priority, []).append(q)
            self._levels = sorted(levels.items(), reverse=True)
            self._queues_seen = [q for _, level in self._levels for q in level]
            self._wanted = set(self._queues_seen)
        return self._queues_seen

    def changes(self, lanes: Sequence[Lane]) -> Changes:
        """What to subscribe and cancel so that exactly ``lanes`` are subscribed."""
        queues = self._lane_queues(lanes)
        tags = self.tags
        consume = [q for q in queues if q not in tags]
        probe: list[str] = []
        if self.missing and consume:
            consume = [q for q in consume if not self._missing(q)]
            probe = [q for q in consume if q in self.missing]
        # Every subscription is wanted unless more are subscribed than wanted ones are.
        extra = len(tags) > len(queues) - len(consume)
        cancel = [q for q in tags if q not in self._wanted] if extra else []
        return Changes(consume, cancel, credit_for(self.prefetch, len(queues)), probe)

    def _missing(self, queue: str) -> bool:
        at = self.missing.get(queue)
        return at is not None and time.monotonic() - at < MISSING_RETRY

    def probed(self, queue: str, exists: bool) -> None:
        """A lane queue once missing was looked for again: subscribe it, or wait again.

        (Looked for on another channel: a refused ``basic.consume`` would close this
        one, and with it return everything it holds, counted as delivered.)"""
        if exists:
            self.missing.pop(queue, None)
        else:
            self.missing[queue] = time.monotonic()

    def closed(self, reason: str) -> None:
        """The broker closed the channel for ``reason``. If a lane queue does not exist
        (deleted under a consumer that still lists it), it is left out for a while, so
        that one missing lane does not keep every other lane from being consumed."""
        if m := _NO_QUEUE.search(reason):
            self.missing[m.group(1)] = time.monotonic()

    def subscribe(self, queue: str) -> str:
        """The consumer tag to subscribe ``queue`` with (recorded before the I/O, so a
        delivery that beats the consume-ok is known)."""
        tag = f"{self._prefix}{next(self._count)}"
        self.tags[queue] = tag
        self.queues[tag] = queue
        return tag

    def cancelled(self, queue: str) -> list[Received]:
        """``queue`` is no longer subscribed; returns what it pushed, to give back."""
        self.tags.pop(queue, None)
        return self._drop(queue)

    def cancel_all(self) -> list[str]:
        """Every subscription is cancelled; returns their tags, to cancel on the channel.

        Their queues stay known by tag until :meth:`forget`: a delivery already on its
        way still names its lane, and is given back rather than lost."""
        tags = list(self.tags.values())
        self.tags.clear()
        return tags

    def forget(self, tags: Sequence[str]) -> None:
        """Nothing more can come for these cancelled subscriptions."""
        for tag in tags:
            self.queues.pop(tag, None)

    def _drop(self, queue: str) -> list[Received]:
        items = list(self._buffers.pop(queue, ()))
        self._size -= len(items)
        return items

    def pushed(self, tag: str, item: Received) -> None:
        """A delivery for subscription ``tag`` arrived."""
        queue = self.queues.get(tag, "")
        buffer = self._buffers.get(queue)
        if buffer is None:
            buffer = self._buffers[queue] = deque()
        buffer.append(item)
        self._size += 1
        self.busy.add(queue)
        self._empty_once.discard(queue)

    def got(self, queue: str, item: Received | None) -> None:
        """A ``basic.get`` on ``queue`` returned ``item`` (None: the queue was empty).

        One empty answer does not make the lane empty: if an ack had just freed its
        subscription's credit, the broker may have pushed the lane's next message just
        before the get, and the broker writes that delivery after the get's empty
        answer. A second get settles it, since its answer comes after that delivery;
        till then a lower lane's pushed message must wait (strict priority)."""
        if item is None:
            if queue in self._empty_once:
                self._empty_once.discard(queue)
                self.busy.discard(queue)
            else:
                self._empty_once.add(queue)
            return
        self._empty_once.discard(queue)
        buffer = self._buffers.get(queue)
        if buffer is None:
            buffer = self._buffers[queue] = deque()
        buffer.append(item)
        self._size += 1

    def next(self, lanes: Sequence[Lane], max_count: int) -> tuple[list[Received], list[list[str]]]:
        """What a receive hands out now, or which lane queues to ``basic.get`` first.

        Returns ``(items, [])``, or ``([], levels)``: lane queues, grouped by priority
        level and in the consumer's order, that may hold messages their subscription
        has no credit left to push (they pushed, and nothing of theirs waits here), at
        the level about to be served or above it. Their turn is not skipped: a higher
        level's next message must not lose to a pushed lower one (strict priority), nor
        a tenant's to another tenant's (round-robin). A consumer of one lane never gets:
        its credit is its whole prefetch.
        """
        self._lane_queues(lanes)
        if len(self._queues_seen) > 1 and self.busy:
            buffers, wanted = self._buffers, self._wanted
            top = max(
                (self._level_of[q] for q, b in buffers.items() if b and q in wanted),
                default=None,
            )
            busy = self.busy
            gets = [
                found
                for priority, level in self._levels
                if top is None or priority >= top
                if (found := [q for q in level if q in busy and not buffers.get(q)])
            ]
            if gets:
                return [], gets
        return self.take(lanes, max_count), []

    def queue_of(self, tag: str) -> str | None:
        return self.queues.get(tag)

    def strays(self) -> list[Received]:
        """What arrived for subscriptions since cancelled: to give back."""
        out: list[Received] = []
        for queue in [q for q in self._buffers if q not in self.tags]:
            out += self._drop(queue)
        return out

    def drain(self) -> list[Received]:
        """Everything pushed and not handed out (closing: to give back)."""
        out = [item for buffer in self._buffers.values() for item in buffer]
        self._buffers.clear()
        self._size = 0
        return out

    def take(self, lanes: Sequence[Lane], max_count: int) -> list[Received]:
        """Up to ``max_count`` pushed deliveries from ``lanes``, in the consumer's order:
        the highest priority that has any, shared across its lanes in turn."""
        if not self._size or max_count <= 0:
            return []
        topo, buffers = self.topo, self._buffers
        if len(buffers) == 1:
            # One lane holds everything (a consumer of one lane, or one busy lane):
            # its share is all there is, without the walk over the consumer's lanes.
            self._lane_queues(lanes)
            ((only, held),) = buffers.items()
            if only in self._wanted:
                took = [self._pop(held) for _ in range(min(max_count, len(held)))]
                if not held:
                    del buffers[only]
                self._size -= len(took)
                return took
        by_lane: dict[Lane, str] = {}
        available: dict[Lane, int] = {}
        for lane in lanes:
            physical = topo.physical(lane)
            if physical in by_lane:
                continue
            q = by_lane[physical] = topo.lane_queue(physical)
            buffer = buffers.get(q)
            if buffer:
                available[physical] = len(buffer)
        if not available:
            return []
        out: list[Received] = []
        for physical, n in spread(list(by_lane), max_count, available).items():
            q = by_lane[physical]
            buffer = buffers[q]
            for _ in range(n):
                out.append(self._pop(buffer))
            if not buffer:
                del buffers[q]
        self._size -= len(out)
        return out

    def _pop(self, buffer: deque[Received]) -> Received:
        if not self.topo.native_priority or len(buffer) == 1:
            return buffer.popleft()
        # One classic queue holds every priority of its lane; the broker pushed them in
        # its order at the time, and a higher one may have come since: first out.
        best = max(range(len(buffer)), key=lambda i: (buffer[i].lane.priority, -i))
        item = buffer[best]
        del buffer[best]
        return item
