"""``memory://``: the whole contract in-process, thread-safe, usable from asyncio.

``memory://`` is a private store per connection; ``memory://NAME`` is shared by every
connection in the process that names it. Nothing survives the process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from ...declarations import Stored, adopt_or_conflict
from ...driver import Capabilities, DeadLetter, Driver, Outgoing, QueueStats, Received, Receiver
from ...lanes import Lane
from ...polling import PollingReceiver
from ...spec import QueueSpec
from .settings import MemorySettings
from .store import QueueState, Store

__all__ = ["MemoryDriver", "MemoryReceiver", "create_driver"]

_shared: dict[str, Store] = {}
_shared_lock = threading.Lock()
_owners = itertools.count(1)


def create_driver(settings: MemorySettings) -> MemoryDriver:
    if settings.name is None:
        return MemoryDriver(Store())
    with _shared_lock:
        store = _shared.setdefault(settings.name, Store())
    return MemoryDriver(store)


class MemoryReceiver(PollingReceiver):
    """Takes from the store's lanes; the core's ``receive`` picks which (priority, turns)."""

    def __init__(self, store: Store, state: QueueState) -> None:
        self._store = store
        self._state = state
        self._owner = next(_owners)

    def available(self, lanes: Sequence[Lane], up_to: int) -> dict[Lane, int]:
        return self._store.available(self._state, lanes, up_to)

    def step(self, fn: Callable[[], list[Received]]) -> list[Received]:
        with self._store.cond:  # counting and taking see the same lanes
            return fn()

    def take(self, lane: Lane, n: int) -> list[Received]:
        return self._store.take(self._state, self._owner, lane, n)

    def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> None:
        self._store.wait(self._state, lanes, timeout)
        return None

    def ack(self, item: Received) -> None:
        with self._store.cond:
            self._store.settle(self._state, item.token)

    def nack(self, item: Received, delay: float | None) -> None:
        with self._store.cond:
            record = self._store.settle(self._state, item.token)
            if record is not None:
                self._store.put(self._state, record, delay)
            self._store.cond.notify_all()

    def dead_letter(self, item: Received, reason: str) -> None:
        with self._store.cond:
            record = self._store.settle(self._state, item.token)
            if record is not None:
                self._state.dead.append((record, reason))

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        with self._store.cond:
            deadline = time.monotonic() + seconds
            for item in items:
                held = self._state.held.get(item.token)
                if held is not None:
                    held.deadline = max(held.deadline, deadline)

    def release(self, items: Sequence[Received]) -> None:
        with self._store.cond:
            for item in reversed(items):
                record = self._store.settle(self._state, item.token)
                if record is not None:
                    record.deliveries -= 1  # given back unprocessed: not an attempt
                    self._store.put(self._state, record, None, front=True)
            self._store.cond.notify_all()

    def close(self) -> None:
        with self._store.cond:
            mine = [t for t, h in self._state.held.items() if h.owner == self._owner]
            for token in mine:
                record = self._state.held.pop(token).record
                record.deliveries -= 1
                self._store.put(self._state, record, None, front=True)
            self._store.cond.notify_all()


class MemoryDriver(Driver):
    capabilities = Capabilities(backend="memory", lease_model="lease", lane_refresh=0.0)

    def __init__(self, store: Store) -> None:
        self._store = store

    def queues(self) -> list[str]:
        with self._store.cond:
            return sorted(self._store.queues)

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        spec.check_options("memory")
        with self._store.cond:
            state = self._store.queues.get(spec.name)
            stored = None if state is None else Stored(state.spec, state.provisional)
            effective, write = adopt_or_conflict(stored, spec, implicit)
            if write is not None:
                if state is None:
                    self._store.queues[spec.name] = QueueState(write.spec, write.implicit)
                else:
                    state.spec, state.provisional = write
            return effective

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        with self._store.cond:
            state = self._store.queues.get(spec.name)
            return None if state is None else state.spec

    def _state(self, spec: QueueSpec) -> QueueState:
        with self._store.cond:
            if spec.name not in self._store.queues:
                self._store.queues[spec.name] = QueueState(spec, provisional=True)
            return self._store.queues[spec.name]

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        self._store.publish(self._state(spec), list(messages))

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        with self._store.cond:
            return list(self._state(spec).ready)

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return MemoryReceiver(self._store, self._state(spec))

    def stats(self, spec: QueueSpec) -> QueueStats:
        return self._store.stats(self._state(spec))

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        return self._store.dead_letters(self._state(spec), limit)

    def redrive(self, spec: QueueSpec) -> int:
        return self._store.redrive(self._state(spec))

    def close(self) -> None:
        pass
