"""The sync consumer: an iterator of deliveries, with prefetch and lane fairness.

The decisions (what to do next, how to settle, what to give back) are
:mod:`workq.consumer_state`'s, shared with the async twin; this module does the blocking I/O.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType

from .checks import Gate, check_timeout
from .consumer_state import CLOSE_TIMEOUT, POLL_SLICE, SETTLED_AS, Do, Fetch, Holding, LeaseLog
from .delivery import Delivery
from .driver import Driver, Received, Receiver, call_bounded
from .middleware import Chain
from .spec import QueueSpec

__all__ = ["POLL_SLICE", "Consumer"]

log = logging.getLogger("workq")


class Consumer:
    """Deliveries of one queue. Iterate it, or call ``get(timeout)``.

    Every call on a closed consumer raises ``workq.Closed``.

    Example:
        ```python
        with broker.consumer("reports", prefetch=10) as c:
            for d in c:
                d.ack()
        ```
    """

    def __init__(
        self,
        driver: Driver,
        spec: QueueSpec,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        *,
        parent: Gate | None = None,
        middleware: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._state = Holding(spec, driver.capabilities, prefetch, tenants, parent)
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

    @property
    def closed(self) -> bool:
        """True once this consumer or its broker is closed."""
        return self._state.closed

    def get(self, timeout: float | None = 1.0) -> Delivery | None:
        """The next delivery, or ``None`` if none comes within ``timeout`` seconds.

        Also ``None`` when this consumer already holds ``prefetch`` unsettled deliveries
        and none is settled in time, or when it is closed by another thread meanwhile.

        Args:
            timeout: Seconds to wait; ``None`` waits until a delivery comes.

        Raises:
            Closed: The consumer or its broker is closed.
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is negative or not finite.

        Example:
            ```python
            d = consumer.get(timeout=1.0)
            if d is not None:
                d.ack()
            ```
        """
        state = self._state
        timeout = check_timeout("timeout", timeout)
        with self._lock:
            state.check("get")
            # The common case, a buffered delivery: no other get() need finish first.
            item = state.take()
            if item is not None:
                return Delivery(item, self)
        fetch = Fetch(state, timeout)
        with self._get_lock:
            while True:
                with self._cond:
                    step = fetch.next()
                    if step.do is Do.DELIVER:
                        return Delivery(step.item, self)  # type: ignore[arg-type]
                    if step.do is Do.NOTHING:
                        return None
                    if step.do is not Do.LANES and step.do is not Do.RECEIVE:
                        # WAIT_ROOM (a settlement notifies) or IDLE (no lanes yet).
                        self._cond.wait(step.wait)
                        continue
                if step.do is Do.LANES:
                    lanes = self._driver.lanes(state.spec)
                    with self._cond:
                        state.set_lanes(lanes)
                    continue
                got = self._receiver.receive(step.lanes, step.count, step.wait)
                with self._cond:
                    poison, orphans = fetch.received(got)
                if orphans:
                    self._receiver.release(orphans)
                for item in poison:
                    self._settle(item, "reject", reason=state.poison_reason(item))

    def __iter__(self) -> Iterator[Delivery]:
        """Deliveries until the consumer is closed."""
        while not self._state.closed:
            delivery = self.get(POLL_SLICE)
            if delivery is not None:
                yield delivery

    def _settle(
        self,
        target: Delivery | Received,
        action: str,
        delay: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Settle a delivery (or a poison item never handed out) as ``action``."""
        state = self._state
        if isinstance(target, Delivery):
            with self._lock:
                target._begin(SETTLED_AS[action])
            item = target._item
        else:
            item = target
        settle = state.settlement(item, action, delay, reason)
        try:
            settle.call(self._receiver, item)
            if self._chain is not None:
                self._chain.settled(item, settle.action, settle.delay, settle.reason)
        finally:
            with self._lock:
                if state.done(item):  # only a get() waiting for room waits on a settlement
                    self._cond.notify_all()

    def _keep_leases(self) -> None:
        state = self._state
        interval = state.lease_interval or 1.0
        lease_log = LeaseLog(self.queue, interval)
        try:
            while not self._stopped.wait(interval):
                with self._lock:
                    if state.closed:
                        return
                    held = state.held_items()
                if not held:
                    continue
                try:
                    self._receiver.extend(held, state.spec.lease)
                    lease_log.extended()
                except Exception:  # a missed extension is retried next round
                    lease_log.failed()
        except BaseException as exc:  # a bug, not a broker fault: fail calls, loudly
            with self._cond:
                state.fail(exc)
                self._cond.notify_all()

    def release_unstarted(self) -> int:
        """Give back at once what this consumer has received but not handed out.

        A stopping worker calls this before waiting for its in-flight handlers, so
        prefetched messages are not held up behind a long job. They come back with the
        same ``attempt``: a release is not a delivery attempt.
        """
        self._state.check("release_unstarted")
        with self._get_lock, self._cond:
            items = self._state.unstarted()
        if items:
            self._receiver.release(items)
            if self._chain is not None:
                self._chain.released(items)
        return len(items)

    def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue at once. Idempotent.

        Returns within a few seconds even if the broker does not answer; what could not
        be given back then comes back when its lease or connection lapses.
        """
        with self._cond:
            if not self._state.gate.close():
                return
            self._cond.notify_all()
        self._stopped.set()
        # A get() in progress may be inside a receive: let it finish (at most one poll
        # slice) so that what it receives is released below, not stranded; one that
        # finishes later gives back what it got itself.
        waited = self._get_lock.acquire(timeout=POLL_SLICE + CLOSE_TIMEOUT)
        try:
            with self._cond:
                held = self._state.close_out()
        finally:
            if waited:
                self._get_lock.release()
        receiver = self._receiver

        chain = self._chain

        def give_back() -> None:
            try:
                if held:
                    receiver.release(held)
                    if chain is not None:
                        chain.released(held)
            finally:
                receiver.close()

        try:
            call_bounded(give_back, CLOSE_TIMEOUT, f"closing the consumer of queue {self.queue!r}")
        finally:
            if self._keeper is not None and self._keeper is not threading.current_thread():
                self._keeper.join(timeout=CLOSE_TIMEOUT)

    def __enter__(self) -> Consumer:
        self._state.check("use")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._state.gate.closed:
                self.close()
