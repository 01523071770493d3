"""The backend driver interface: the small surface each backend implements.

The core (consumers, workers, lanes, retries, dead-lettering rules, lease keeping)
sits on top of it, so a backend never re-implements fairness or retries. Each backend
provides a sync :class:`Driver`; it may also provide a native :class:`AsyncDriver`
(RabbitMQ does, on aio-pika); otherwise :func:`threaded` runs the sync one on threads.

Drivers see messages only as :class:`Outgoing` and :class:`Received`: bytes, string
headers, the lane and workq's metadata; bodies are encoded once, in the core
(``workq.codec``).

Rules every driver follows:

- ``publish`` returns only once the broker has durably accepted every message, else it
  raises ``PublishError`` (after bounded retries). It never drops a message in silence.
- ``Received.attempt`` counts deliveries of the message, 1 on the first.
- Driver and Receiver methods may be called from any thread (several consumers of one
  broker run on their own threads); a driver whose client is not thread-safe
  serialises calls itself.
- Anything a receiver still holds when it closes goes back to the queue at once.

Receiving: which lane to take from next (strict priority, then each tenant in turn) is
the core's decision. A backend whose broker keeps one queue per lane subclasses
:class:`workq.polling.PollingReceiver` and implements only ``take(lane, n)`` ("up to n
from this lane now"), optionally ``available`` (counts), ``step`` (atomic counting and
taking) and ``wait_any`` (wait for any of several lanes); its ``receive`` is then done
once, in the core. A backend that implements ``receive`` itself (a push consumer, a
partitioned log) follows ``Receiver.receive``'s rules, using ``workq.lanes.spread`` or
``workq.polling.levels``/``share`` rather than rules of its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from .lanes import Lane
from .spec import QueueSpec

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "AsyncDriver",
    "AsyncReceiver",
    "Capabilities",
    "DeadLetter",
    "Driver",
    "LaneStats",
    "Outgoing",
    "QueueStats",
    "Received",
    "Receiver",
    "call_bounded",
    "threaded",
]

log = logging.getLogger("workq")

#: What ``Unsupported`` names for a backend without passive declarations.
PASSIVE = "passive declarations (declare(queue, passive=True))"
#: ... and for one without publishing through a named exchange.
ROUTED = "publishing through an exchange (publish(..., exchange=, routing_key=))"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class Outgoing:
    """A message ready for a driver: encoded body, headers, lane and metadata."""

    lane: Lane
    id: str
    body: bytes
    headers: dict[str, str]
    delay: float | None = None
    attempt: int = 1
    enqueued_at: float = field(default_factory=time.time)
    #: The partitioning hint given with ``key=`` (Kafka's record key), or None.
    key: bytes | None = None


@dataclass(slots=True)
class Received:
    """What a driver hands back for one delivery.

    ``token`` is the driver's own handle (delivery tag, receipt handle, offset...).
    ``attempt`` counts deliveries, 1 on the first.
    """

    lane: Lane
    id: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    enqueued_at: float
    token: Any = None

    @property
    def redelivered(self) -> bool:
        """Whether it was delivered before (``attempt > 1``)."""
        return self.attempt > 1


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend does natively; the core fills the gaps.

    ``lease_model``:
      - ``"lease"``: a held message comes back when its lease (``QueueSpec.lease``)
        lapses; the core extends leases of held messages through ``Receiver.extend``.
      - ``"connection"``: held messages come back when the connection dies (RabbitMQ).
      - ``"session"``: uncommitted work comes back when the group session ends (Kafka).
    ``lane_refresh``: seconds between ``Driver.lanes`` calls of a consumer that takes
    every tenant, so lanes made after it started are found.
    ``receive_batch``: the most a consumer asks of ``Receiver.receive`` at once.
    ``shared_dispatch``: any consumer of a queue can take any ready message, so a slow
    consumer never holds up work a fast one could do. False on a partitioned log, where
    a partition's messages go to its one owner (Kafka without share groups).
    ``exchange_routing``: the driver implements ``publish_routed`` (RabbitMQ).
    """

    backend: str
    lease_model: Literal["lease", "connection", "session"] = "lease"
    max_body_size: int | None = None
    lane_refresh: float = 1.0
    receive_batch: int = 100
    shared_dispatch: bool = True
    #: ``publish(None, body, exchange=..., routing_key=...)`` works (``Driver.publish_routed``).
    exchange_routing: bool = False


@dataclass(frozen=True, slots=True)
class LaneStats:
    """Depth of one lane of a queue.

    Attributes:
        lane: The lane (queue, tenant, priority).
        ready: Messages ready to be delivered now.
        in_flight: Messages delivered and not yet settled (0 where the broker cannot
            count them, as on RabbitMQ).
        delayed: Messages waiting out a delay.
    """

    lane: Lane
    ready: int
    in_flight: int
    delayed: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth of a queue: per lane, and its dead letters.

    ``broker.stats(queue)`` returns one; ``workq stats QUEUE`` prints it.

    Attributes:
        queue: The queue's name.
        lanes: One entry per lane (tenant and priority) the queue has.
        dead_letters: Messages in the queue's dead-letter queue.

    Example:
        ```python
        stats = broker.stats("reports")
        print(stats.ready, stats.in_flight, stats.delayed, stats.dead_letters)
        for lane in stats.lanes:
            print(lane.lane.tenant, lane.lane.priority, lane.ready)
        ```
    """

    queue: str
    lanes: list[LaneStats] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def ready(self) -> int:
        """Messages ready to be delivered, over all lanes."""
        return sum(s.ready for s in self.lanes)

    @property
    def in_flight(self) -> int:
        """Messages delivered and not yet settled, over all lanes (where known)."""
        return sum(s.in_flight for s in self.lanes)

    @property
    def delayed(self) -> int:
        """Messages waiting out a delay, over all lanes."""
        return sum(s.delayed for s in self.lanes)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a queue's dead-letter queue, with why it is there.

    ``broker.dead_letters(queue, limit=100)`` returns a list of them; reading removes
    nothing. ``broker.redrive(queue)`` moves them back to the queue.

    Attributes:
        id: The message id.
        queue: The queue it was published to.
        tenant: Its tenant; ``None`` for the default lane.
        priority: Its priority.
        body: The body, in bytes.
        headers: Its headers.
        reason: Why it was dead-lettered (the handler's ``Reject`` reason, its last
            error after ``max_attempts``, a validation error...).
        attempt: Deliveries it had.
        enqueued_at: When it was first published, as a Unix timestamp.

    Example:
        ```python
        for dead in broker.dead_letters("reports", limit=20):
            print(dead.id, dead.attempt, dead.reason)
        ```
    """

    id: str
    queue: str
    tenant: str | None
    priority: int
    body: bytes
    headers: dict[str, str]
    reason: str
    attempt: int
    enqueued_at: float

    @classmethod
    def of(cls, item: Received, reason: str) -> DeadLetter:
        """The dead letter a delivery read from a dead-letter queue stands for: the one
        place a backend's received message becomes a ``DeadLetter``."""
        return cls(
            id=item.id,
            queue=item.lane.queue,
            tenant=item.lane.tenant,
            priority=item.lane.priority,
            body=item.body,
            headers=dict(item.headers),
            reason=reason,
            attempt=item.attempt,
            enqueued_at=item.enqueued_at,
        )


class Receiver(ABC):
    """One consumer's hold on one queue: receives, settles, extends and releases."""

    @abstractmethod
    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        """Up to ``max_count`` deliveries from ``lanes``; wait up to ``timeout`` for one.

        ``lanes`` come in order of preference: priority descending, and within a
        priority the tenant whose turn it is first. Take from the highest priority that
        has messages; spread the count across its lanes rather than draining one (see
        ``workq.lanes.spread``). Return as soon as anything is there. Never return
        messages from lanes not listed. :class:`workq.polling.PollingReceiver`
        implements this over ``take(lane, n)``.
        """

    @abstractmethod
    def ack(self, item: Received) -> None:
        """Done: remove the message for good."""

    @abstractmethod
    def nack(self, item: Received, delay: float | None) -> None:
        """Put the message back, deliverable again after ``delay`` seconds (now if None)."""

    @abstractmethod
    def dead_letter(self, item: Received, reason: str) -> None:
        """Move the message to the queue's dead-letter queue with ``reason``."""

    @abstractmethod
    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Keep these held for ``seconds`` more (lease backends; others may do nothing)."""

    @abstractmethod
    def release(self, items: Sequence[Received]) -> None:
        """Give these back now, unprocessed: deliverable at once to any consumer."""

    @abstractmethod
    def close(self) -> None:
        """Stop receiving; release whatever is still held. Idempotent."""


class Driver(ABC):
    """A connection to one broker."""

    capabilities: Capabilities

    @abstractmethod
    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        """Create the queue and its dead-letter queue, or check an existing one matches.

        Returns the queue's effective spec. Idempotent; a conflicting declaration raises
        ``ConfigurationError`` naming the setting. Unknown ``spec.options`` raise
        ``ConfigurationError`` naming them. ``implicit=True`` is a first use without a
        declaration: if the queue exists, adopt its settings (where the backend stores
        them) instead of raising.
        """

    @abstractmethod
    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        """Durably enqueue every message (in its lane), or raise ``PublishError``."""

    @abstractmethod
    def lanes(self, spec: QueueSpec) -> list[Lane]:
        """The lanes of this queue that exist now."""

    @abstractmethod
    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        """A receiver for a consumer that holds at most ``prefetch`` deliveries."""

    @abstractmethod
    def stats(self, spec: QueueSpec) -> QueueStats: ...

    @abstractmethod
    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first, without removing them."""

    @abstractmethod
    def redrive(self, spec: QueueSpec) -> int:
        """Move every dead letter back to its lane with attempt reset; return how many."""

    @abstractmethod
    def close(self) -> None:
        """Close connections. Idempotent."""

    def queues(self) -> list[str]:
        """Names of the workq queues on the broker, sorted (``broker.queues()``,
        ``workq queues``).

        Queue names only: not their lanes, dead-letter or other helper queues. Optional:
        this default raises ``Unsupported``. A backend that can list only in some setups
        raises ``Unsupported`` naming why and what to do (RabbitMQ without its management
        API); one that never can keeps this default.

        Example:
            ```python
            def queues(self) -> list[str]:
                return sorted(self._store.queues)
            ```
        """
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, "listing queues")

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """The queue as it exists, creating nothing: ``declare(q, passive=True)``.

        Returns its effective spec (the stored declaration, else what the broker's own
        object says, such as an adopted queue's visibility timeout, else ``spec``), or
        None if the queue does not exist. Never creates, binds or writes anything.
        """
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, PASSIVE)

    def publish_routed(self, exchange: str, routing_key: str, messages: Sequence[Outgoing]) -> None:
        """Publish through a named exchange with a routing key (``publish(None, body,
        exchange=..., routing_key=...)``), each message confirmed and mandatory: one
        that no queue takes raises ``PublishError``. Optional (RabbitMQ)."""
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, ROUTED)


class AsyncReceiver(ABC):
    """The async twin of :class:`Receiver`; same methods, as coroutines.

    ``receive`` must be safe to cancel: the consumer cancels one that outlives its
    timeout by more than a grace period (a silent network), and a cancelled receive must
    lose nothing: what it had taken goes back to the queue (see ``threaded()``).
    """

    @abstractmethod
    async def receive(
        self, lanes: Sequence[Lane], max_count: int, timeout: float
    ) -> list[Received]: ...
    @abstractmethod
    async def ack(self, item: Received) -> None: ...
    @abstractmethod
    async def nack(self, item: Received, delay: float | None) -> None: ...
    @abstractmethod
    async def dead_letter(self, item: Received, reason: str) -> None: ...
    @abstractmethod
    async def extend(self, items: Sequence[Received], seconds: float) -> None: ...
    @abstractmethod
    async def release(self, items: Sequence[Received]) -> None: ...
    @abstractmethod
    async def close(self) -> None: ...


class AsyncDriver(ABC):
    """The async twin of :class:`Driver`; same methods, as coroutines."""

    capabilities: Capabilities

    @abstractmethod
    async def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec: ...
    @abstractmethod
    async def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None: ...
    @abstractmethod
    async def lanes(self, spec: QueueSpec) -> list[Lane]: ...
    @abstractmethod
    async def open(self, spec: QueueSpec, prefetch: int) -> AsyncReceiver: ...
    @abstractmethod
    async def stats(self, spec: QueueSpec) -> QueueStats: ...
    @abstractmethod
    async def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]: ...
    @abstractmethod
    async def redrive(self, spec: QueueSpec) -> int: ...
    @abstractmethod
    async def close(self) -> None: ...

    async def queues(self) -> list[str]:
        """The twin of :meth:`Driver.queues`; the same default (``Unsupported``)."""
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, "listing queues")

    async def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """See :meth:`Driver.inspect`."""
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, PASSIVE)

    async def publish_routed(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> None:
        """See :meth:`Driver.publish_routed`."""
        from .errors import Unsupported

        raise Unsupported(self.capabilities.backend, ROUTED)


class _OnThreads:
    """Runs blocking calls on a driver-owned pool so the event loop never blocks."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        import asyncio  # here, not at the top: sync programs never load asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))


class _ThreadedReceiver(_OnThreads, AsyncReceiver):
    """A sync receiver for ``workq.aio``: its blocking calls run on ``pool``'s threads.

    Two hooks spare a thread hop where the sync receiver allows it, each a call that
    never blocks, made on the event loop:

    - ``ack_on_loop`` acks instead of a thread: for a backend whose ack never waits (it
      marks an offset done, or writes or queues an ack frame).
    - ``buffered(lanes, max_count)`` is tried before each receive: what the receiver
      already holds and may hand out now, or ``[]`` (then the receive goes to a
      thread). It must pick exactly what a receive would.
    """

    def __init__(
        self,
        receiver: Receiver,
        pool: ThreadPoolExecutor,
        *,
        ack_on_loop: Callable[[Received], None] | None = None,
        buffered: Callable[[Sequence[Lane], int], list[Received]] | None = None,
    ) -> None:
        super().__init__(pool)
        self.sync = receiver
        self._ack_on_loop = ack_on_loop
        self._buffered = buffered

    async def receive(
        self, lanes: Sequence[Lane], max_count: int, timeout: float
    ) -> list[Received]:
        import asyncio  # here, not at the top: sync programs never load asyncio

        if self._buffered is not None and (items := self._buffered(lanes, max_count)):
            return items
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self.sync.receive, lanes, max_count, timeout)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread still finishes its receive; give back what it got, lose nothing.
            future.add_done_callback(self._release_late)
            raise

    def _release_late(self, future: asyncio.Future[list[Received]]) -> None:
        if not future.cancelled() and future.exception() is None and future.result():
            self._pool.submit(self.sync.release, future.result())

    async def ack(self, item: Received) -> None:
        if self._ack_on_loop is not None:
            self._ack_on_loop(item)
        else:
            await self._call(self.sync.ack, item)

    async def nack(self, item: Received, delay: float | None) -> None:
        await self._call(self.sync.nack, item, delay)

    async def dead_letter(self, item: Received, reason: str) -> None:
        await self._call(self.sync.dead_letter, item, reason)

    async def extend(self, items: Sequence[Received], seconds: float) -> None:
        await self._call(self.sync.extend, items, seconds)

    async def release(self, items: Sequence[Received]) -> None:
        await self._call(self.sync.release, items)

    async def close(self) -> None:
        await self._call(self.sync.close)


class _ThreadedDriver(_OnThreads, AsyncDriver):
    def __init__(self, driver: Driver, max_threads: int) -> None:
        super().__init__(ThreadPoolExecutor(max_threads, thread_name_prefix="workq-aio"))
        self.sync = driver
        self.capabilities = driver.capabilities

    async def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        return await self._call(self.sync.declare, spec, implicit=implicit)

    async def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        await self._call(self.sync.publish, spec, messages)

    async def lanes(self, spec: QueueSpec) -> list[Lane]:
        return await self._call(self.sync.lanes, spec)

    async def open(self, spec: QueueSpec, prefetch: int) -> AsyncReceiver:
        return _ThreadedReceiver(await self._call(self.sync.open, spec, prefetch), self._pool)

    async def stats(self, spec: QueueSpec) -> QueueStats:
        return await self._call(self.sync.stats, spec)

    async def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        return await self._call(self.sync.dead_letters, spec, limit)

    async def redrive(self, spec: QueueSpec) -> int:
        return await self._call(self.sync.redrive, spec)

    async def queues(self) -> list[str]:
        return await self._call(self.sync.queues)

    async def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        return await self._call(self.sync.inspect, spec)

    async def publish_routed(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> None:
        await self._call(self.sync.publish_routed, exchange, routing_key, messages)

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._call(self.sync.close)
        self._pool.shutdown(wait=False)


def threaded(driver: Driver, max_threads: int = 32) -> AsyncDriver:
    """An :class:`AsyncDriver` running ``driver``'s blocking calls on its own threads."""
    return _ThreadedDriver(driver, max_threads)


def call_bounded(fn: Callable[[], object], seconds: float, what: str) -> bool:
    """Run ``fn`` on a thread of its own and wait at most ``seconds`` for it.

    Returns True if it finished (re-raising what it raised), False if it did not: then
    it is left running on its daemon thread and a warning names ``what``. For calls
    that must not hang their caller (closing), where a thread per call costs nothing.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"workq-{what[:40]}", daemon=True).start()
    if not done.wait(seconds):
        log.warning("%s did not finish within %.1fs; going on without waiting", what, seconds)
        return False
    if failure:
        raise failure[0]
    return True
