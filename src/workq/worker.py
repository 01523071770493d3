"""The sync worker: a consumer feeding a pool of handler threads, with graceful stop,
riding out broker outages."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .delivery import Delivery
from .middleware import Chain, Middleware, check_middleware
from .processing import Link, Processing, Tally, check_worker_args, fatal
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .broker import Broker  # noqa: F401 - named in the base class's string
    from .consumer import Consumer

__all__ = ["Worker", "WorkerBase", "install_stop_signals"]

log = logging.getLogger("workq")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_signals(stop: Callable[[], None], who: str) -> Callable[[], None]:
    """Make SIGTERM and SIGINT call ``stop``; return a function that puts back the old ones.

    Signal handlers can only be set on the main thread; elsewhere this does nothing, so
    a worker can run beside a web server on a thread of its own.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: signal %s, stopping gracefully", who, signum)
        stop()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


B = TypeVar("B")
H = TypeVar("H")


class WorkerBase(Generic[B, H]):
    """What the sync and async workers share: their arguments (checked once), the
    per-delivery processing, the bookkeeping and the connection state."""

    def __init__(
        self,
        broker: B,
        queue: str,
        handler: H,
        *,
        concurrency: int = 4,
        prefetch: int | None = None,
        tenants: Sequence[str] | None = None,
        shutdown_timeout: float = 30.0,
        middleware: Sequence[Middleware] | None = None,
        retry: RetryPolicy | None = None,
        max_outage: float | None = None,
    ) -> None:
        check_worker_args(
            handler,
            concurrency=concurrency,
            prefetch=prefetch,
            tenants=tenants,
            shutdown_timeout=shutdown_timeout,
            middleware=middleware,
            retry=retry,
            max_outage=max_outage,
        )
        self.broker = broker
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.prefetch = prefetch or concurrency
        self.tenants = tenants
        self.shutdown_timeout = shutdown_timeout
        self.retry = retry
        self.max_outage = max_outage
        self._stop = threading.Event()  # settable from any thread or a signal handler
        self._tally = Tally()
        #: The worker's own middleware (bookkeeping first), after the broker's.
        self.middleware: tuple[Middleware, ...] = (self._tally, *check_middleware(middleware))
        base: Chain = getattr(broker, "chain", None) or Chain(
            (), getattr(broker, "backend", "") if broker is not None else ""
        )
        self._chain = base.with_more(self.middleware)
        self._processing = Processing(queue, self._chain, retry)
        self._link = Link(queue, max_outage)

    @property
    def processed(self) -> int:
        """Deliveries whose handler has finished (returned or raised)."""
        return self._tally.processed

    @property
    def settled(self) -> dict[str, int]:
        """How the deliveries this worker handled ended, by outcome (``ack``, ``retry``,
        ``dead_letter``, and ``release`` for handlers cut off at shutdown)."""
        return {k.value: v for k, v in self._tally.outcomes.items()}

    @property
    def connected(self) -> bool:
        """True while connected and consuming; False during a reconnect or once stopping."""
        return self._link.connected and not self._stop.is_set()

    def stop(self) -> None:
        """Ask ``run()`` to stop gracefully; safe from any thread or a signal handler."""
        self._stop.set()


class Worker(WorkerBase["Broker", Callable[[Delivery], Any]]):
    """Runs ``handler`` for each delivery of a queue.

    Return → ack; ``raise Retry(delay)`` → retry; ``raise Reject(reason)`` → dead letter;
    any other exception → retry after the ``retry`` policy's backoff (dead letter after
    max_attempts). A lost broker connection is re-established with backoff, for as long
    as it takes unless ``max_outage`` seconds bound it.

    Made by ``broker.worker(...)`` (see its arguments). ``run()`` blocks until SIGTERM,
    SIGINT or ``stop()``, then stops gracefully: no new deliveries, unstarted ones
    released at once, running handlers given ``shutdown_timeout`` to finish.

    Example:
        ```python
        worker = broker.worker("reports", handle, concurrency=4)
        worker.run()
        ```
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running = threading.Event()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def run(self) -> None:
        """Consume until stopped by ``stop()``, SIGTERM or SIGINT; then stop gracefully.

        In-flight handlers get ``shutdown_timeout`` seconds to finish; deliveries not
        started, or not finished in time, go back to the queue at once. Broker outages
        do not end it (unless longer than ``max_outage``).
        """
        restore = self._install_signals()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"workq-{self.queue}")
        slots = threading.Semaphore(self.concurrency)
        running: set[Future[None]] = set()
        consumer: Consumer | None = None
        stats = self._start_stats()
        self._running.set()
        try:
            while not self._stop.is_set():
                if consumer is None:
                    consumer = self._connect()
                    continue
                try:
                    self._consume(consumer, pool, slots, running)
                except Exception as exc:
                    if fatal(exc):
                        raise
                    self._link.down(exc)
                    self._discard(consumer)
                    consumer = None
            self._link.connected = False
            if consumer is not None:
                try:
                    consumer.release_unstarted()
                except Exception:
                    log.warning("worker on %r: releasing prefetched messages failed", self.queue)
            _, late = wait(list(running), timeout=self.shutdown_timeout)
            self._processing.late(len(late), self.shutdown_timeout)
        finally:
            self._link.connected = False
            if consumer is not None:
                self._discard(consumer)
            pool.shutdown(wait=False, cancel_futures=True)
            if stats is not None:
                stats.join(timeout=5)
            self._running.clear()
            restore()

    def _connect(self) -> Consumer | None:
        """A new consumer, or ``None`` after a failed attempt and its backoff wait."""
        try:
            consumer = self.broker.consumer(
                self.queue, prefetch=self.prefetch, tenants=self.tenants, middleware=self.middleware
            )
        except Exception as exc:
            self._stop.wait(self._link.failed(exc))
            return None
        return consumer  # connected once a get() has gone through (some drivers connect lazily)

    def _consume(
        self,
        consumer: Consumer,
        pool: ThreadPoolExecutor,
        slots: threading.Semaphore,
        running: set[Future[None]],
    ) -> None:
        def finished(f: Future[None]) -> None:
            running.discard(f)
            slots.release()

        while not self._stop.is_set():
            if not slots.acquire(timeout=0.1):
                continue
            try:
                delivery = consumer.get(timeout=0.2) if not self._stop.is_set() else None
            except BaseException:
                slots.release()
                raise
            if not self._link.connected:
                self._link.up()
            if delivery is None:
                slots.release()
                continue
            future = pool.submit(self._handle, delivery)
            running.add(future)
            future.add_done_callback(finished)

    def _discard(self, consumer: Consumer) -> None:
        try:
            consumer.close()
        except Exception as exc:  # the connection is gone: the broker takes them back
            log.debug("worker on %r: closing the old consumer failed: %s", self.queue, exc)

    def _handle(self, delivery: Delivery) -> None:
        error: BaseException | None = None
        ctx = self._processing.context(delivery)
        try:
            self._processing.begin(ctx)
            with self._chain.around(ctx):
                self.handler(delivery)
        except Exception as exc:
            error = exc
        decision = self._processing.end(ctx, error, delivery._spec)
        try:
            with self._processing.settling(delivery):
                if decision is not None:  # else the handler settled it itself
                    delivery._apply(decision)
        finally:
            self._processing.finish(ctx)

    def _start_stats(self) -> threading.Thread | None:
        interval = self._chain.stats_interval
        if interval is None:
            return None

        def refresh() -> None:
            while not self._stop.is_set():
                try:
                    self._chain.stats(self.broker.stats(self.queue))
                except Exception as exc:
                    log.debug("worker on %r: stats() failed: %s", self.queue, exc)
                self._stop.wait(interval)

        t = threading.Thread(target=refresh, name=f"workq-stats-{self.queue}", daemon=True)
        t.start()
        return t

    def _install_signals(self) -> Callable[[], None]:
        return install_stop_signals(self.stop, f"worker on {self.queue!r}")

    def wait_running(self, timeout: float = 10.0) -> bool:
        """Block until ``run()`` has started (for tests and hosting code)."""
        deadline = time.monotonic() + timeout
        while not self._running.wait(0.05):
            if time.monotonic() > deadline:
                return False
        return True
