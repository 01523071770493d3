"""A group consumer's partitions: what each holds, and the lane rules over them.

I/O-free and called under the receiver's lock: :class:`Part` keeps one assigned
partition's buffer, handed-out and done offsets; :func:`pick` hands out by the lane
order the core asked for; :func:`flow` decides which partitions pause and resume.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ...driver import Received
from ...lanes import Lane, spread

__all__ = ["Part", "PartKey", "Token", "flow", "pick"]

PartKey = tuple[str, int]


class Token(NamedTuple):
    """Where a delivery came from: partition, offset, and which assignment of it."""

    part: PartKey
    offset: int
    generation: int
    key: bytes | None


@dataclass(slots=True)
class Part:
    """One assigned partition's bookkeeping."""

    key: PartKey
    lane: Lane
    generation: int
    buffer: deque[Received] = field(default_factory=deque)  # fetched, not handed out; by offset
    out: set[int] = field(default_factory=set)  # handed out, not settled
    pending: deque[int] = field(default_factory=deque)  # fetched, not done; ascending
    done: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the last fetched
    committed: int | None = None
    eof: bool = False
    paused: bool = False  # for flow: too much held
    asleep: bool = False  # paused for idleness (see :mod:`.idle`)
    active_at: float = 0.0  # monotonic time of its last record, work note or assignment
    end_seen: int | None = None  # the offset its last end-of-partition was reported at
    busy_keys: Counter[bytes] = field(default_factory=Counter)

    def commit_point(self) -> int | None:
        """The offset below which every fetched message is done."""
        while self.pending and self.pending[0] in self.done:
            self.done.discard(self.pending.popleft())
        if self.pending:
            return self.pending[0]
        return self.next_offset

    def resume_at(self) -> int | None:
        """Where fetching goes on after a pause: one past the last fetched record, else
        where the end was reported (nothing fetched in this assignment)."""
        return self.next_offset if self.next_offset is not None else self.end_seen

    def put_back(self, item: Received) -> None:
        """Return a delivery to the buffer, in its offset's place."""
        bisect.insort(self.buffer, item, key=lambda i: i.token.offset)

    @property
    def unknown(self) -> bool:
        """Might have messages we have not fetched yet (no end-of-partition seen)."""
        return not self.buffer and not self.eof and not self.paused and not self.asleep

    def eligible(self, ordered: bool) -> int:
        """How many buffered deliveries may go out now (``ordered``: one per idle key)."""
        if not ordered:
            return len(self.buffer)
        keys = set()
        count = 0
        for item in self.buffer:
            key = item.token.key
            if key is None:
                count += 1
            elif self.busy_keys[key] == 0 and key not in keys:
                keys.add(key)
                count += 1
        return count

    def take(self, count: int, ordered: bool) -> list[Received]:
        """Up to ``count`` deliveries from the buffer, marked handed out."""
        took: list[Received]
        if not ordered:
            took = [self.buffer.popleft() for _ in range(min(count, len(self.buffer)))]
            self.out.update(item.token.offset for item in took)
            return took
        took = []
        kept: deque[Received] = deque()
        for item in self.buffer:
            key = item.token.key
            if len(took) < count and (key is None or self.busy_keys[key] == 0):
                self.out.add(item.token.offset)
                if key is not None:
                    self.busy_keys[key] += 1
                took.append(item)
            else:
                kept.append(item)
        self.buffer = kept
        return took


def pick(
    parts: Iterable[Part], lanes: Sequence[Lane], max_count: int, final: bool, ordered: bool
) -> tuple[list[Received], bool]:
    """Deliveries by the lane rules, and whether ready ones were held back while a lane
    that may come first has not reported yet (only when not ``final``).

    ``lanes`` come in the core's order of preference; the counts follow
    :func:`workq.lanes.spread`, so the rules stay the core's.
    """
    parts = list(parts)
    # Nothing buffered, nothing to pick: an idle consumer plans every receive, and with
    # thousands of partitions grouping them by lane (hashing each) was most of its CPU.
    if not any(part.buffer for part in parts):
        return [], False
    by_lane: dict[Lane, list[Part]] = {}
    for part in parts:
        by_lane.setdefault(part.lane, []).append(part)
    available = {
        lane: sum(p.eligible(ordered) for p in by_lane[lane]) if lane in by_lane else 0
        for lane in lanes
    }
    ready = [lane for lane in lanes if available[lane] > 0]
    if not ready:
        return [], False
    if not final:
        # Strict priority and fair turns need to see the lanes that may come first:
        # wait while a higher lane, or an empty lane at the best level, has not
        # reported its end yet (its messages may be on their way).
        best = max(lane.priority for lane in ready)
        if any(
            part.unknown
            for lane in lanes
            if lane.priority > best or (lane.priority == best and not available[lane])
            for part in by_lane.get(lane, [])
        ):
            return [], True
    plan = spread(lanes, max_count, available)
    items: list[Received] = []
    for lane in lanes:
        wanted = plan.get(lane, 0)
        # The lane's partitions share the count, so none waits behind another.
        active = sorted(by_lane.get(lane, []), key=lambda p: p.key)
        while wanted > 0 and active:
            share = max(wanted // len(active), 1)
            for part in list(active):
                asked = min(share, wanted)
                took = part.take(asked, ordered)
                items += took
                wanted -= len(took)
                if len(took) < asked:
                    active.remove(part)
                if wanted == 0:
                    break
    return items, False


def flow(parts: Iterable[Part], bound: int) -> tuple[list[Part], list[Part]]:
    """Partitions to pause and to resume, their ``paused`` flags set.

    Past ``bound`` held (buffered and handed out), only partitions with something
    buffered pause: one with nothing buffered keeps fetching, so every lane's next
    message is in view of the lane rules (a noisy lane's backlog filling the bound must
    not hide a quiet lane's one message). A paused partition resumes once it has handed
    out all it had, or when what is held is down to half the bound.
    """
    parts = list(parts)
    held = sum(len(p.buffer) + len(p.out) for p in parts)
    over, under = held >= bound, held <= bound // 2
    pause: list[Part] = []
    resume: list[Part] = []
    for part in parts:
        if part.asleep:
            continue  # not fetched until woken (see :mod:`.idle`); holds nothing to pause
        if part.paused:
            if under or not part.buffer:
                part.paused = False
                resume.append(part)
        elif over and part.buffer:
            part.paused = True
            pause.append(part)
    return pause, resume
