"""The sync worker: a consumer feeding a pool of handler threads, with graceful stop."""

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
from .errors import AlreadySettled
from .policy import log_handler_error, outcome

if TYPE_CHECKING:
    from .broker import Broker  # noqa: F401 - named in the base class's string

__all__ = ["Worker", "WorkerBase"]

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
    """What the sync and async workers share: their arguments, checked once."""

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
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} must be an int >= 1")
        if prefetch is not None and (not isinstance(prefetch, int) or prefetch < concurrency):
            raise ValueError(
                f"prefetch={prefetch!r} must be an int >= concurrency ({concurrency}), or None"
            )
        if shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout={shutdown_timeout!r} must be >= 0")
        self.broker = broker
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.prefetch = prefetch or concurrency
        self.tenants = tenants
        self.shutdown_timeout = shutdown_timeout
        self._stop = threading.Event()  # settable from any thread or a signal handler
        #: Deliveries whose handler has finished (returned or raised).
        self.processed = 0


class Worker(WorkerBase["Broker", Callable[[Delivery], Any]]):
    """Runs ``handler`` for each delivery of a queue.

    Return → ack; ``raise Retry(delay)`` → nack; ``raise Reject(reason)`` → dead letter;
    any other exception → nack with exponential backoff (dead letter after max_attempts).

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
        self._count_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def stop(self) -> None:
        """Ask ``run()`` to stop gracefully; safe from any thread or a signal handler."""
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped by ``stop()``, SIGTERM or SIGINT; then stop gracefully.

        In-flight handlers get ``shutdown_timeout`` seconds to finish; deliveries not
        started, or not finished in time, go back to the queue at once.
        """
        restore = self._install_signals()
        consumer = self.broker.consumer(self.queue, prefetch=self.prefetch, tenants=self.tenants)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"workq-{self.queue}")
        slots = threading.Semaphore(self.concurrency)
        running: set[Future[None]] = set()

        def finished(f: Future[None]) -> None:
            running.discard(f)
            slots.release()

        self._running.set()
        try:
            while not self._stop.is_set():
                if not slots.acquire(timeout=0.1):
                    continue
                delivery = consumer.get(timeout=0.2) if not self._stop.is_set() else None
                if delivery is None:
                    slots.release()
                    continue
                future = pool.submit(self._handle, delivery)
                running.add(future)
                future.add_done_callback(finished)
            consumer.release_unstarted()
            _, late = wait(list(running), timeout=self.shutdown_timeout)
            if late:
                log.warning(
                    "worker on %r: %d handlers still running after shutdown_timeout=%ss; "
                    "their messages go back to the queue",
                    self.queue,
                    len(late),
                    self.shutdown_timeout,
                )
        finally:
            consumer.close()
            pool.shutdown(wait=False, cancel_futures=True)
            self._running.clear()
            restore()

    def _handle(self, delivery: Delivery) -> None:
        error: BaseException | None = None
        try:
            self.handler(delivery)
        except Exception as exc:
            error = exc
            log_handler_error(self.queue, delivery, exc)
        with self._count_lock:
            self.processed += 1
        if delivery.settled:
            return  # the handler settled it itself
        try:
            delivery._apply(outcome(delivery._spec, delivery.attempt, error))
        except AlreadySettled:
            pass
        except Exception:
            log.exception("settling %s on queue %r failed", delivery.id, self.queue)

    def _install_signals(self) -> Callable[[], None]:
        return install_stop_signals(self.stop, f"worker on {self.queue!r}")

    def wait_running(self, timeout: float = 10.0) -> bool:
        """Block until ``run()`` has started consuming (for tests and hosting code)."""
        deadline = time.monotonic() + timeout
        while not self._running.wait(0.05):
            if time.monotonic() > deadline:
                return False
        return True
