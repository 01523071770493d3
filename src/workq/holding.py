"""What one consumer holds, and the rules for taking and settling: shared sync/async state.

Held = received and not yet settled, whether buffered here or handed out. The consumer
never holds more than ``prefetch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .driver import Capabilities
from .lanes import Lane, LaneBuffers
from .messages import Received
from .names import check_tenant
from .policy import exhausted_reason
from .spec import QueueSpec

log = logging.getLogger("workq")


@dataclass(frozen=True, slots=True)
class Settle:
    """The driver call a settlement comes down to."""

    action: str  # "ack" | "nack" | "dead_letter"
    delay: float | None = None
    reason: str | None = None


#: Settling as an ack needs no decision: one shared value.
ACK = Settle("ack")


class Holding:
    def __init__(
        self,
        spec: QueueSpec,
        capabilities: Capabilities,
        prefetch: int,
        tenants: Sequence[str] | None,
    ) -> None:
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch={prefetch!r} must be an int >= 1")
        if isinstance(tenants, str):
            raise TypeError(f"tenants must be a list of names, not the string {tenants!r}")
        self.spec = spec
        self.capabilities = capabilities
        self.prefetch = prefetch
        self.tenants = None if tenants is None else frozenset(check_tenant(t) for t in tenants)
        self.buffers: LaneBuffers[Received] = LaneBuffers()
        self.out: dict[int, Received] = {}
        self.lanes: list[Lane] = []
        self._lanes_at = float("-inf")
        self.closed = False

    @property
    def held(self) -> int:
        return len(self.buffers) + len(self.out)

    @property
    def room(self) -> int:
        return max(self.prefetch - self.held, 0)

    def lanes_due(self) -> bool:
        return time.monotonic() - self._lanes_at >= self.capabilities.lane_refresh

    def set_lanes(self, lanes: Sequence[Lane]) -> None:
        self._lanes_at = time.monotonic()
        self.lanes = [
            lane
            for lane in lanes
            if lane.queue == self.spec.name
            and (self.tenants is None or lane.tenant in self.tenants)
        ]

    def fetch_plan(self) -> tuple[list[Lane], int]:
        """Lanes in order of preference and how many to ask for."""
        return self.buffers.order(self.lanes), min(self.room, self.capabilities.receive_batch)

    def accept(self, items: Sequence[Received]) -> list[Received]:
        """Buffer what was received; return those delivered too often to be held.

        A message delivered more than ``max_attempts`` times without being settled (its
        consumers crashed) goes to the dead-letter queue rather than round again.
        """
        poison = []
        for item in items:
            if item.attempt > self.spec.max_attempts:
                poison.append(item)
            else:
                self.buffers.add(item.lane, item)
        return poison

    def poison_reason(self, item: Received) -> str:
        return (
            f"delivered {item.attempt} times without being settled "
            f"(max_attempts={self.spec.max_attempts}); its consumers may be crashing on it"
        )

    def take(self) -> Received | None:
        item = self.buffers.pop()
        if item is not None:
            self.out[id(item)] = item
        return item

    def done(self, item: Received) -> bool:
        """Forget a settled delivery; True if the consumer was full, so that a ``get()``
        waiting for room should be woken."""
        full = self.held >= self.prefetch
        self.out.pop(id(item), None)
        return full

    def unstarted(self) -> list[Received]:
        """Remove and return what is buffered but not handed out."""
        return self.buffers.drain()

    def all_held(self) -> list[Received]:
        return self.buffers.drain() + [self.out.pop(k) for k in list(self.out)]

    def held_items(self) -> list[Received]:
        """Everything held, left in place (for lease extension)."""
        return [*self.out.values(), *self.buffers.items()]

    def settlement(
        self, item: Received, action: str, delay: float | None, reason: str | None
    ) -> Settle:
        """Turn ack / nack / reject into the driver call, applying the dead-letter rules."""
        if action == "ack":
            return ACK
        if action == "nack":
            if item.attempt >= self.spec.max_attempts:
                return self._dead(exhausted_reason(self.spec, item.attempt, reason))
            return Settle("nack", delay=delay)
        return self._dead(reason or "rejected")

    def _dead(self, reason: str) -> Settle:
        if not self.spec.dead_letter:
            log.warning(
                "queue %r has dead_letter=False: dropping a message (%s)", self.spec.name, reason
            )
            return Settle("ack", reason=reason)
        return Settle("dead_letter", reason=reason)

    @property
    def lease_interval(self) -> float | None:
        """How often to extend held leases, or None where the backend needs no help."""
        if self.capabilities.lease_model != "lease":
            return None
        return max(self.spec.lease / 3, 0.01)
