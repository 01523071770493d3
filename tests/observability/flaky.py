"""A driver wrapper that makes a real driver unreachable on demand, for outage tests.

Only the reachability is faked: every message still lives in the wrapped (memory or
SQLite) driver, so what is lost or kept is what the real backend decides.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from workq import BrokerUnavailable, QueueSpec
from workq.driver import DeadLetter, Driver, Outgoing, QueueStats, Received, Receiver
from workq.lanes import Lane


class Switch:
    """Down or up; counts the calls refused while down."""

    def __init__(self) -> None:
        self._down = threading.Event()
        self.refused = 0

    def down(self) -> None:
        self._down.set()

    def up(self) -> None:
        self._down.clear()

    def check(self) -> None:
        if self._down.is_set():
            self.refused += 1
            raise BrokerUnavailable("flaky test broker is down (connection refused)")


class FlakyReceiver(Receiver):
    def __init__(self, inner: Receiver, switch: Switch) -> None:
        self.inner = inner
        self.switch = switch

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        self.switch.check()
        return self.inner.receive(lanes, max_count, timeout)

    def ack(self, item: Received) -> None:
        self.switch.check()
        self.inner.ack(item)

    def nack(self, item: Received, delay: float | None) -> None:
        self.switch.check()
        self.inner.nack(item, delay)

    def dead_letter(self, item: Received, reason: str) -> None:
        self.switch.check()
        self.inner.dead_letter(item, reason)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        self.switch.check()
        self.inner.extend(items, seconds)

    def release(self, items: Sequence[Received]) -> None:
        self.switch.check()
        self.inner.release(items)

    def close(self) -> None:
        # A dead connection's receiver closes without the broker: what it held comes
        # back by the backend's own rule (lease expiry on memory and SQLite).
        if self.switch._down.is_set():
            return
        self.inner.close()


class FlakyDriver(Driver):
    def __init__(self, inner: Driver, switch: Switch) -> None:
        self.inner = inner
        self.switch = switch
        self.capabilities = inner.capabilities

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        self.switch.check()
        return self.inner.declare(spec, implicit=implicit)

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        self.switch.check()
        self.inner.publish(spec, messages)

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        self.switch.check()
        return self.inner.lanes(spec)

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        self.switch.check()
        return FlakyReceiver(self.inner.open(spec, prefetch), self.switch)

    def stats(self, spec: QueueSpec) -> QueueStats:
        self.switch.check()
        return self.inner.stats(spec)

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        self.switch.check()
        return self.inner.dead_letters(spec, limit)

    def redrive(self, spec: QueueSpec) -> int:
        self.switch.check()
        return self.inner.redrive(spec)

    def close(self) -> None:
        self.inner.close()


def flaky(url: str, **kwargs: Any) -> tuple[Any, Switch]:
    """A sync ``workq.Broker`` on ``url`` whose reachability a ``Switch`` controls."""
    import workq
    from workq.backends import create_driver
    from workq.settings import load

    settings = load(url)
    switch = Switch()
    broker = workq.Broker(FlakyDriver(create_driver(settings), switch), settings, **kwargs)
    return broker, switch


def flaky_async(url: str, **kwargs: Any) -> tuple[Any, Switch]:
    """The ``workq.aio.Broker`` twin of :func:`flaky` (the sync driver on threads)."""
    import workq
    from workq.backends import create_driver
    from workq.driver import threaded
    from workq.settings import load

    settings = load(url)
    switch = Switch()
    driver = threaded(FlakyDriver(create_driver(settings), switch))
    return workq.aio.Broker(driver, settings, **kwargs), switch
