"""Lanes and the lane scheduler: strict priority, round-robin across tenants.

A lane is one physical queue: (queue, tenant, priority). The scheduler is pure state,
shared by the sync and async consumers, so no backend re-implements fairness.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Lane", "LaneBuffers", "order_lanes"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, order=True)
class Lane:
    """One physical queue: a queue's messages for one tenant at one priority level.

    ``tenant=None`` is the default lane of messages published without a tenant.

    Attributes:
        queue: The queue's name.
        tenant: The tenant; ``None`` for the default lane.
        priority: The priority level.
    """

    queue: str
    tenant: str | None = None
    priority: int = 0


def _tenant_key(tenant: str | None) -> str:
    # The default lane sorts first; real tenant names cannot be empty.
    return tenant or ""


def order_lanes(lanes: Iterable[Lane], last_served: dict[int, str | None]) -> list[Lane]:
    """Lanes in order of preference: higher priority first, then the tenant whose turn it is.

    ``last_served[p]`` is the tenant served last at priority ``p``; the tenant after it
    (by name, wrapping round) comes first, so every tenant gets one turn in each round.
    """
    by_priority: dict[int, list[Lane]] = {}
    for lane in set(lanes):
        by_priority.setdefault(lane.priority, []).append(lane)
    ordered: list[Lane] = []
    for priority in sorted(by_priority, reverse=True):
        group = sorted(by_priority[priority], key=lambda lane: _tenant_key(lane.tenant))
        if priority in last_served:
            last = _tenant_key(last_served[priority])
            start = next((i for i, lane in enumerate(group) if _tenant_key(lane.tenant) > last), 0)
            group = group[start:] + group[:start]
        ordered.extend(group)
    return ordered


class LaneBuffers(Generic[T]):
    """Deliveries received but not yet handed out, one FIFO per lane.

    ``pop`` hands out the next one by the lane rules: the highest priority that has
    something, and within it the tenant whose turn it is.
    """

    def __init__(self) -> None:
        # Only lanes holding something are keys, so the common case (one lane) is cheap.
        self._buffers: dict[Lane, deque[T]] = {}
        self.last_served: dict[int, str | None] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, lane: Lane, item: T) -> None:
        buffer = self._buffers.get(lane)
        if buffer is None:
            buffer = self._buffers[lane] = deque()
        buffer.append(item)
        self._count += 1

    def order(self, lanes: Iterable[Lane]) -> list[Lane]:
        """The given lanes in the order the next fetch should prefer them."""
        return order_lanes(lanes, self.last_served)

    def pop(self) -> T | None:
        buffers = self._buffers
        if not buffers:
            return None
        if len(buffers) == 1:
            lane = next(iter(buffers))
        else:
            lane = order_lanes(buffers, self.last_served)[0]
        self.last_served[lane.priority] = lane.tenant
        buffer = buffers[lane]
        item = buffer.popleft()
        if not buffer:
            del buffers[lane]
        self._count -= 1
        return item

    def items(self) -> list[T]:
        """Everything buffered, left in place."""
        return [item for buffer in self._buffers.values() for item in buffer]

    def drain(self) -> list[T]:
        """Remove and return everything buffered."""
        items = self.items()
        self._buffers.clear()
        self._count = 0
        return items


def spread(lanes: Sequence[Lane], max_count: int, available: dict[Lane, int]) -> dict[Lane, int]:
    """How many to take from each lane: the first priority level that has messages,
    shared round-robin across its lanes; then lower levels for what is left.

    A helper for drivers that know (or can guess) how many each lane holds.
    """
    plan: dict[Lane, int] = {}
    remaining = max_count
    levels: dict[int, list[Lane]] = {}
    for lane in lanes:
        levels.setdefault(lane.priority, []).append(lane)
    for priority in sorted(levels, reverse=True):
        group = [lane for lane in levels[priority] if available.get(lane, 0) > 0]
        while remaining > 0 and group:
            # Equal shares per round (one each when few remain), the earlier lanes
            # taking the odd ones: the same plan as one-at-a-time turns, in few steps.
            share = max(remaining // len(group), 1)
            for lane in list(group):
                if remaining == 0:
                    break
                take = min(share, available[lane] - plan.get(lane, 0), remaining)
                plan[lane] = plan.get(lane, 0) + take
                remaining -= take
                if plan[lane] >= available[lane]:
                    group.remove(lane)
        if remaining == 0:
            break
    return plan
