"""What one consumer holds, and the rules for taking and settling: shared sync/async state.

Held = received and not yet settled, whether buffered here or handed out. The consumer
never holds more than ``prefetch``.

Everything here is I/O-free. The sync and async consumers are thin loops over it: a
:class:`Fetch` says what one ``get()`` should do next (hand out a buffered delivery,
wait for room, list lanes, receive, or give up), the consumer does that I/O and reports
back, so the twins share every decision and differ only in how they wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter
from typing import overload

from .checks import Gate, check_int
from .driver import AsyncReceiver, Capabilities, Received, Receiver
from .errors import AlreadySettled, Closed, WorkqError
from .lanes import Lane, LaneBuffers, LaneOrder
from .names import check_tenants
from .outcome import Outcome
from .policy import exhausted_reason
from .spec import QueueSpec

__all__ = [
    "ACK",
    "CLOSE_TIMEOUT",
    "POLL_SLICE",
    "RECEIVE_GRACE",
    "SETTLED_AS",
    "Do",
    "Fetch",
    "Holding",
    "LeaseLog",
    "Settle",
    "Step",
]

log = logging.getLogger("workq")

#: Longest single wait on the driver, so close() and lane refresh are noticed promptly.
POLL_SLICE = 1.0

#: How much longer than asked a receive may take (network round trips, a loaded machine)
#: before the async consumer gives up on it as hung and cancels it.
RECEIVE_GRACE = 5.0

#: How long ``close()`` waits for the driver to give messages back and let go.
CLOSE_TIMEOUT = 5.0

#: A lane as a plain tuple, compared without a Python-level ``__eq__`` per lane.
_LANE_FIELDS = attrgetter("queue", "tenant", "priority")

SETTLED_AS = {"ack": "acked", "nack": "nacked", "reject": "rejected"}


@dataclass(frozen=True, slots=True)
class Settle:
    """The driver call a settlement comes down to."""

    action: Outcome  # what happens to the message: the one vocabulary of outcomes
    delay: float | None = None
    reason: str | None = None

    @overload
    def call(self, receiver: Receiver, item: Received) -> None: ...
    @overload
    def call(self, receiver: AsyncReceiver, item: Received) -> Awaitable[None]: ...
    def call(self, receiver: Receiver | AsyncReceiver, item: Received) -> Awaitable[None] | None:
        """Make the driver call on ``receiver``: the sync one returns when done, the
        async one returns what to await."""
        if self.action is Outcome.ACK:
            return receiver.ack(item)
        if self.action is Outcome.RETRY:
            return receiver.nack(item, self.delay)
        return receiver.dead_letter(item, self.reason or "rejected")


class LeaseLog:
    """What a consumer's lease keeper logs: one warning when extending leases starts to
    fail (a missed extension is retried next round), one line when it works again."""

    def __init__(self, queue: str, interval: float) -> None:
        self.queue = queue
        self.interval = interval
        self.failing = False

    def extended(self) -> None:
        if self.failing:
            log.info("extending leases on queue %r works again", self.queue)
        self.failing = False

    def failed(self) -> None:
        """Call from the ``except`` block, so the warning carries the traceback."""
        if not self.failing:
            log.warning(
                "extending leases on queue %r failed; retrying every %.1fs",
                self.queue,
                self.interval,
                exc_info=True,
            )
        self.failing = True


#: Settling as an ack needs no decision: one shared value.
ACK = Settle(Outcome.ACK)


class Holding:
    """A consumer's state: what it holds, its lanes, whether it is open."""

    def __init__(
        self,
        spec: QueueSpec,
        capabilities: Capabilities,
        prefetch: int,
        tenants: Sequence[str] | None,
        parent: Gate | None = None,
    ) -> None:
        check_int("prefetch", prefetch, 1)
        self.tenants = check_tenants(tenants)
        self.gate = Gate("consumer", parent)
        #: Why a background task of this consumer stopped; every later call raises it.
        self.failure: BaseException | None = None
        self.spec = spec
        self.capabilities = capabilities
        self.prefetch = prefetch
        self.buffers: LaneBuffers[Received] = LaneBuffers()
        self.out: dict[int, Received] = {}
        self.lanes: list[Lane] = []
        # The lanes sorted once per lane-set change, not on every fetch.
        self._order = LaneOrder(())
        self._listed: list[tuple[str, str | None, int]] = []
        self._raw: Sequence[Lane] | None = None
        self._lanes_at = float("-inf")

    @property
    def closed(self) -> bool:
        """Closed itself, or its broker is."""
        return not self.gate.is_open

    def check(self, call: str) -> None:
        """Raise ``Closed`` if closed, or the error a background task of this consumer died of."""
        self.gate.check(call)
        if self.failure is not None:
            raise WorkqError(
                f"cannot {call}: the consumer of queue {self.spec.name!r} stopped working "
                f"({type(self.failure).__name__}: {self.failure}); close it and open a new one"
            ) from self.failure

    def fail(self, error: BaseException) -> None:
        """A background task died of ``error``: pending and later calls raise it."""
        log.error(
            "a background task of the consumer of queue %r failed; its calls now raise",
            self.spec.name,
            exc_info=error,
        )
        self.failure = error

    def check_settle(self, delivery_id: str, settled: str | None, how: str) -> None:
        """Settling once, on an open consumer: ``AlreadySettled`` or ``Closed`` otherwise."""
        if settled is not None:
            raise AlreadySettled(
                f"delivery {delivery_id} of queue {self.spec.name!r} was already {settled}; "
                f"it cannot be {how} too: settle each delivery once"
            )
        if self.closed:
            raise Closed(
                "consumer",
                f"settle delivery {delivery_id}",
                f"its consumer of queue {self.spec.name!r} is closed, so the message went "
                "back to the queue and will be delivered again; settle deliveries before "
                "closing their consumer",
            )

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
        # The same listing as last time (the usual case) changes nothing: no filtering
        # or sorting again. A driver that caches its listing hands back the very same
        # list, which needs no comparison either.
        if lanes is self._raw:
            return
        self._raw = lanes
        listed = list(map(_LANE_FIELDS, lanes))
        if listed == self._listed:
            return
        self._listed = listed
        kept = [
            lane
            for lane in lanes
            if lane.queue == self.spec.name
            and (self.tenants is None or lane.tenant in self.tenants)
        ]
        if kept != self.lanes:
            self.lanes = kept
            self._order = LaneOrder(kept)

    def fetch_plan(self) -> tuple[list[Lane], int]:
        """Lanes in order of preference and how many to ask for."""
        return (
            self._order.order(self.buffers.last_served),
            min(self.room, self.capabilities.receive_batch),
        )

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
            return Settle(Outcome.RETRY, delay=delay)
        return self._dead(reason or "rejected")

    def _dead(self, reason: str) -> Settle:
        if not self.spec.dead_letter:
            log.warning(
                "queue %r has dead_letter=False: dropping a message (%s)", self.spec.name, reason
            )
            return Settle(Outcome.ACK, reason=reason)
        return Settle(Outcome.DEAD_LETTER, reason=reason)

    def close_out(self) -> list[Received]:
        """Close (if not yet) and return everything held, for the driver to give back."""
        self.gate.close()
        return self.all_held()

    @property
    def lease_interval(self) -> float | None:
        """How often to extend held leases, or None where the backend needs no help."""
        if self.capabilities.lease_model != "lease":
            return None
        return max(self.spec.lease / 3, 0.01)


class Do(Enum):
    """What a ``get()`` does next."""

    DELIVER = "hand out ``Step.item``"
    NOTHING = "return None: nothing came in time, or the consumer closed meanwhile"
    WAIT_ROOM = "wait up to ``Step.wait`` for a settlement to make room"
    LANES = "list the queue's lanes, then ``Holding.set_lanes``"
    RECEIVE = "receive up to ``Step.count`` from ``Step.lanes``, waiting ``Step.wait``"
    IDLE = "no lanes yet: wait ``Step.wait`` before looking again"


@dataclass(frozen=True, slots=True)
class Step:
    do: Do
    item: Received | None = None
    lanes: Sequence[Lane] = ()
    count: int = 0
    wait: float = 0.0


_NOTHING = Step(Do.NOTHING)
_LANES = Step(Do.LANES)


class Fetch:
    """One ``get(timeout)`` call's progress, I/O-free: ``next()`` says what to do.

    Once the deadline has passed, one receive that waits 0 is still made, so
    ``get(timeout=0)`` returns what is ready now.
    """

    __slots__ = ("deadline", "expired", "refreshed", "state")

    def __init__(self, state: Holding, timeout: float | None) -> None:
        self.state = state
        self.deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        self.expired = False
        # Lanes were just listed: fetch before listing again (lane_refresh may be 0).
        self.refreshed = False

    def next(self) -> Step:
        state = self.state
        if state.failure is not None:
            state.check("get")
        if state.closed:
            return _NOTHING
        item = state.take()
        if item is not None:
            return Step(Do.DELIVER, item)
        remaining = self.deadline - time.monotonic()
        if state.room == 0:
            return (
                _NOTHING if remaining <= 0 else Step(Do.WAIT_ROOM, wait=min(remaining, POLL_SLICE))
            )
        if not self.refreshed and state.lanes_due():
            self.refreshed = True
            return _LANES
        self.refreshed = False
        lanes, count = state.fetch_plan()
        wait = max(min(remaining, POLL_SLICE), 0.0)
        if lanes and count:
            return (
                _NOTHING if self.expired else Step(Do.RECEIVE, lanes=lanes, count=count, wait=wait)
            )
        if remaining <= 0:
            return _NOTHING
        return Step(Do.IDLE, wait=min(wait, state.capabilities.lane_refresh or 0.05))

    def received(self, got: Sequence[Received]) -> tuple[list[Received], list[Received]]:
        """Take in what a receive returned: (to dead-letter as poison, to give back now).

        What arrives after the consumer closed goes straight back to the queue.
        """
        if not got and time.monotonic() >= self.deadline:
            self.expired = True
        if self.state.closed:
            return [], list(got)
        return self.state.accept(got), []
