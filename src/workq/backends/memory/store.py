"""The in-process store behind ``memory://``: lanes, leases, delays and dead letters.

One condition variable guards everything; receivers wait on it for publishes, delays
coming due and leases lapsing.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...driver import DeadLetter, LaneStats, Outgoing, QueueStats, Received
from ...lanes import Lane
from ...spec import QueueSpec

__all__ = ["Held", "QueueState", "Record", "Store"]

_tokens = itertools.count(1)


@dataclass(slots=True)
class Record:
    id: str
    lane: Lane
    body: bytes
    headers: dict[str, str]
    enqueued_at: float
    deliveries: int = 0

    def received(self, token: int | None = None) -> Received:
        """This message as a driver hands it out (attempt = deliveries so far)."""
        return Received(
            lane=self.lane,
            id=self.id,
            body=self.body,
            headers=dict(self.headers),
            attempt=self.deliveries,
            enqueued_at=self.enqueued_at,
            token=token,
        )


@dataclass(slots=True)
class Held:
    record: Record
    deadline: float
    owner: int


@dataclass(slots=True)
class QueueState:
    spec: QueueSpec
    provisional: bool
    ready: dict[Lane, deque[Record]] = field(default_factory=dict)
    delayed: list[tuple[float, int, Record]] = field(default_factory=list)
    held: dict[int, Held] = field(default_factory=dict)
    dead: list[tuple[Record, str]] = field(default_factory=list)

    def lane(self, lane: Lane) -> deque[Record]:
        return self.ready.setdefault(lane, deque())


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, QueueState] = {}

    def put(
        self, state: QueueState, record: Record, delay: float | None, front: bool = False
    ) -> None:
        if delay:
            heapq.heappush(state.delayed, (time.monotonic() + delay, next(_tokens), record))
        elif front:
            state.lane(record.lane).appendleft(record)
        else:
            state.lane(record.lane).append(record)

    def publish(self, state: QueueState, messages: list[Outgoing]) -> None:
        with self.cond:
            for m in messages:
                record = Record(m.id, m.lane, m.body, dict(m.headers), m.enqueued_at, m.attempt - 1)
                state.lane(m.lane)  # the lane exists from its first message
                self.put(state, record, m.delay)
            self.cond.notify_all()

    def _sweep(self, state: QueueState, now: float) -> float:
        """Make due delays ready and lapsed leases available; return the next due time."""
        while state.delayed and state.delayed[0][0] <= now:
            _, _, record = heapq.heappop(state.delayed)
            state.lane(record.lane).append(record)
        for token, held in list(state.held.items()):
            if held.deadline <= now:
                del state.held[token]
                state.lane(held.record.lane).appendleft(held.record)
        nexts = [held.deadline for held in state.held.values()]
        if state.delayed:
            nexts.append(state.delayed[0][0])
        return min(nexts, default=float("inf"))

    def available(self, state: QueueState, lanes: Sequence[Lane], up_to: int) -> dict[Lane, int]:
        """Ready messages per lane (at most ``up_to`` each), after due delays and lapsed
        leases came back."""
        with self.cond:
            self._sweep(state, time.monotonic())
            # Walk the lanes that hold something, not every lane asked about: an idle
            # consumer of a thousand tenants costs what one of a single tenant does.
            counts = {lane: min(len(q), up_to) for lane, q in state.ready.items() if q}
            if counts:
                wanted = set(lanes)
                counts = {lane: n for lane, n in counts.items() if lane in wanted}
            return counts

    def take(self, state: QueueState, owner: int, lane: Lane, n: int) -> list[Received]:
        """Up to ``n`` of ``lane``'s ready messages, held by ``owner`` under a lease."""
        out: list[Received] = []
        with self.cond:
            ready = state.ready.get(lane)
            until = time.monotonic() + state.spec.lease
            while ready and len(out) < n:
                record = ready.popleft()
                record.deliveries += 1
                token = next(_tokens)
                state.held[token] = Held(record, until, owner)
                out.append(record.received(token))
        return out

    def wait(self, state: QueueState, lanes: Sequence[Lane], timeout: float) -> None:
        """Wait up to ``timeout`` for a publish, a delay coming due or a lease lapsing,
        unless one of ``lanes`` has a ready message already."""
        with self.cond:
            now = time.monotonic()
            next_due = self._sweep(state, now)
            if any(state.ready.get(lane) for lane in lanes):
                return
            self.cond.wait(max(min(timeout, next_due - now), 0.001))

    def settle(self, state: QueueState, token: int) -> Record | None:
        """Take a held record out; None if its lease lapsed and it went back."""
        held = state.held.pop(token, None)
        return held.record if held else None

    def stats(self, state: QueueState) -> QueueStats:
        with self.cond:
            self._sweep(state, time.monotonic())
            lanes = {lane: [len(items), 0, 0] for lane, items in state.ready.items()}
            for held in state.held.values():
                lanes.setdefault(held.record.lane, [0, 0, 0])[1] += 1
            for _, _, record in state.delayed:
                lanes.setdefault(record.lane, [0, 0, 0])[2] += 1
            return QueueStats(
                queue=state.spec.name,
                lanes=[
                    LaneStats(lane, *counts)
                    for lane, counts in sorted(lanes.items(), key=_lane_key)
                ],
                dead_letters=len(state.dead),
            )

    def dead_letters(self, state: QueueState, limit: int) -> list[DeadLetter]:
        with self.cond:
            return [DeadLetter.of(r.received(), reason) for r, reason in state.dead[:limit]]

    def redrive(self, state: QueueState) -> int:
        with self.cond:
            moved = state.dead
            state.dead = []
            for record, _ in moved:
                record.deliveries = 0
                self.put(state, record, None)
            self.cond.notify_all()
            return len(moved)


def _lane_key(entry: tuple[Lane, list[int]]) -> tuple[str, int]:
    return (entry[0].tenant or "", -entry[0].priority)
