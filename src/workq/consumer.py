"""The sync consumer: an iterator of deliveries, with prefetch and lane fairness."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

from .delivery import Delivery
from .driver import Driver, Receiver
from .holding import Holding
from .messages import Received
from .middleware import Chain
from .spec import QueueSpec

__all__ = ["Consumer"]

log = logging.getLogger("workq")

#: Longest single wait on the driver, so close() and lane refresh are noticed promptly.
POLL_SLICE = 1.0


class Consumer:
    """Deliveries of one queue. Iterate it, or call ``get(timeout)``.

    >>> with broker.consumer("reports", prefetch=10) as c:   # doctest: +SKIP
    ...     for d in c:
    ...         d.ack()
    """

    def __init__(
        self,
        driver: Driver,
        spec: QueueSpec,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        middleware: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._state = Holding(spec, driver.capabilities, prefetch, tenants)
        self._chain = middleware or None  # told of every settlement and release
        self._receiver: Receiver = driver.open(spec, prefetch)
        # A plain Lock: get/ack take it twice per message, and ``with lock`` is C code.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._get_lock = threading.Lock()
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None
        if self._state.lease_interval is not None:
            self._keeper = threading.Thread(
                target=self._keep_leases, name=f"workq-lease-{spec.name}", daemon=True
            )
            self._keeper.start()

    @property
    def queue(self) -> str:
        return self._state.spec.name

    @property
    def prefetch(self) -> int:
        return self._state.prefetch

    def get(self, timeout: float | None = 1.0) -> Delivery | None:
        """The next delivery, or ``None`` if none comes within ``timeout`` seconds.

        Also ``None`` when this consumer already holds ``prefetch`` unsettled deliveries
        and none is settled in time.
        """
        with self._lock:
            # The common case, a buffered delivery: no other get() need finish first.
            delivery = self._buffered()
            if delivery is not None or self._state.closed:
                return delivery
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        with self._get_lock:
            while True:
                with self._cond:
                    delivery = self._buffered()
                    if delivery is not None or self._state.closed:
                        return delivery
                    remaining = deadline - time.monotonic()
                    if self._state.room == 0:
                        if remaining <= 0:
                            return None
                        self._cond.wait(min(remaining, POLL_SLICE))
                        continue
                if self._state.lanes_due():
                    lanes = self._driver.lanes(self._state.spec)
                    with self._cond:
                        self._state.set_lanes(lanes)
                with self._cond:
                    lanes, count = self._state.fetch_plan()
                wait = max(min(remaining, POLL_SLICE), 0.0)
                if lanes and count:
                    got = self._receiver.receive(lanes, count, wait)
                    with self._cond:
                        poison = self._state.accept(got)
                    for item in poison:
                        self._settle(item, "reject", reason=self._state.poison_reason(item))
                    if got:
                        continue
                elif wait > 0:
                    # No lanes exist yet: wait for the next refresh rather than spin.
                    with self._cond:
                        self._cond.wait(min(wait, self._driver.capabilities.lane_refresh or 0.05))
                if time.monotonic() >= deadline:
                    return None

    def _buffered(self) -> Delivery | None:
        """A delivery from the buffer, if it holds one and the consumer is open (under
        the lock)."""
        item = None if self._state.closed else self._state.take()
        return None if item is None else Delivery(item, self)

    def __iter__(self) -> Iterator[Delivery]:
        """Deliveries until the consumer is closed."""
        while not self._state.closed:
            delivery = self.get(POLL_SLICE)
            if delivery is not None:
                yield delivery

    def _settle(
        self, item: Received, action: str, delay: float | None = None, reason: str | None = None
    ) -> None:
        state = self._state
        with self._lock:
            settle = state.settlement(item, action, delay, reason)
            closed = state.closed
        try:
            if closed:
                # Released on close already: the broker owns it again.
                log.warning("delivery %s settled after its consumer closed: ignored", item.id)
            elif settle.action == "ack":
                self._receiver.ack(item)
            elif settle.action == "nack":
                self._receiver.nack(item, settle.delay)
            else:
                self._receiver.dead_letter(item, settle.reason or "rejected")
            if self._chain is not None and not closed:
                self._chain.settled(item, settle.action, settle.delay, settle.reason)
        finally:
            with self._lock:
                if state.done(item):  # only a get() waiting for room waits on a settlement
                    self._cond.notify_all()

    def _keep_leases(self) -> None:
        interval = self._state.lease_interval or 1.0
        while not self._stopped.wait(interval):
            with self._lock:
                if self._state.closed:
                    return
                held = self._state.held_items()
            if held:
                try:
                    self._receiver.extend(held, self._state.spec.lease)
                except Exception:  # keep trying: a missed extension is retried next round
                    log.exception("extending leases on queue %r failed", self.queue)

    def release_unstarted(self) -> int:
        """Give back at once what this consumer has received but not handed out.

        A stopping worker calls this before waiting for its in-flight handlers, so
        prefetched messages are not held up behind a long job.
        """
        with self._get_lock, self._cond:
            items = self._state.unstarted()
        if items:
            self._receiver.release(items)
            if self._chain is not None:
                self._chain.released(items)
        return len(items)

    def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue at once. Idempotent."""
        with self._cond:
            if self._state.closed:
                return
            self._state.closed = True
            self._cond.notify_all()
        self._stopped.set()
        # A get() in progress may be inside a receive: let it finish (at most one poll
        # slice) so that what it receives is released below, not stranded.
        with self._get_lock, self._cond:
            held = self._state.all_held()
        try:
            if held:
                self._receiver.release(held)
                if self._chain is not None:
                    self._chain.released(held)
        finally:
            self._receiver.close()
            if self._keeper is not None and self._keeper is not threading.current_thread():
                self._keeper.join(timeout=5)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._state.closed:
                self.close()
