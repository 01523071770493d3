"""``workq.App``: handlers declared with a decorator, run together by ``app.run()`` or
``workq run module:app``.

>>> import workq
>>> from pydantic import BaseModel
>>> class ReportJob(BaseModel):
...     day: str
>>> app = workq.App()
>>> @app.handler("reports", concurrency=4)
... def collect(job: ReportJob) -> None:
...     print(job.day)
>>> [h.queue for h in app.handlers]
['reports']
"""

from __future__ import annotations

import inspect
import logging
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .checks import check_seconds
from .delivery import BaseDelivery
from .errors import ConfigurationError, Reject
from .middleware import Middleware, check_middleware
from .names import check_queue
from .processing import Link, check_worker_args, sleep_unless
from .retry import RetryPolicy
from .worker import install_stop_signals

__all__ = ["App", "HandlerSpec"]

log = logging.getLogger("workq")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class HandlerSpec:
    """One registered handler: its queue, the user's function and how to run it."""

    queue: str
    func: Callable[..., Any]
    concurrency: int = 4
    prefetch: int | None = None
    tenants: Sequence[str] | None = None
    shutdown_timeout: float = 30.0
    declare: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    middleware: tuple[Middleware, ...] = ()

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))


def _arguments(func: Callable[..., Any]) -> Callable[[BaseDelivery], list[Any]]:
    """How to turn a delivery into the handler's arguments, from its annotations.

    I/O-free and shared by the sync and async handlers.

    A parameter annotated with a pydantic model gets the body validated as that model
    (a body that does not validate is rejected with the validation error); one
    annotated with a delivery type, or not annotated, gets the delivery itself.
    """
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise ConfigurationError(
            f"handler {func.__qualname__}: cannot resolve its type annotations ({exc}); "
            "import the types it names at module level"
        ) from exc
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params or len(params) > 2:
        raise ConfigurationError(
            f"handler {func.__qualname__} must take one argument (the delivery or a pydantic "
            "model of its body), optionally followed by the delivery"
        )
    makers: list[Callable[[BaseDelivery], Any]] = []
    for param in params:
        hint = hints.get(param.name)
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            makers.append(_parser(hint))
        elif (
            hint is None
            or hint is Any
            or (isinstance(hint, type) and issubclass(hint, BaseDelivery))
        ):
            makers.append(lambda d: d)
        else:
            raise ConfigurationError(
                f"handler {func.__qualname__}: parameter {param.name!r} is annotated "
                f"{hint!r}; use a pydantic model or workq.Delivery"
            )
    return lambda d: [make(d) for make in makers]


def _bound(func: Callable[..., Any]) -> Callable[[Any], Any]:
    """``func`` as a worker's handler: called with the arguments its annotations ask
    for (see :func:`_arguments`); a coroutine function stays one."""
    args = _arguments(func)
    if inspect.iscoroutinefunction(func):

        async def call_async(d: Any) -> Any:
            return await func(*args(d))

        return call_async

    def call(d: Any) -> Any:
        return func(*args(d))

    return call


def _parser(model: type[BaseModel]) -> Callable[[BaseDelivery], BaseModel]:
    def parse(d: BaseDelivery) -> BaseModel:
        try:
            return d.parse(model)
        except ValidationError as exc:
            # Retrying cannot make a bad body valid: straight to the dead-letter queue.
            raise Reject(f"body is not a valid {model.__name__}: {exc}") from exc

    return parse


class App:
    """A set of handlers run together; the broker URL comes from ``WORKQ_URL`` at run time.

    ``App(url)`` fixes the URL instead; ``app.run(url=...)`` overrides both.

    Args:
        url: The broker URL; ``None`` for ``WORKQ_URL`` at run time.
        middleware: ``workq.Middleware`` objects wrapping every publish, handler and
            settlement of the app's brokers (sync and async handlers alike).
        max_outage: Seconds a broker outage is ridden out before ``run()`` raises
            ``BrokerUnavailable``; ``None`` (the default) reconnects for as long as it
            takes.

    Example:
        ```python
        app = App("memory://", middleware=[workq.Middleware()])
        ```
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
        max_outage: float | None = None,
    ) -> None:
        check_seconds("max_outage", max_outage, optional=True)
        self.url = url
        self.middleware = check_middleware(middleware)
        self.max_outage = max_outage
        self.handlers: list[HandlerSpec] = []
        self._stop = threading.Event()
        self._running = threading.Event()
        self._workers: list[Any] = []
        self._lock = threading.Lock()

    def handler(
        self,
        queue: str,
        *,
        concurrency: int = 4,
        prefetch: int | None = None,
        tenants: Sequence[str] | None = None,
        shutdown_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        middleware: Sequence[Middleware] | None = None,
        **declare: Any,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``queue``.

        Extra keywords (``max_attempts=3``, ``lease=60``...) declare the queue with them.
        A plain function runs on threads; an ``async def`` runs under ``workq.aio``.
        ``retry`` (a ``workq.RetryPolicy``) sets the backoff of failures; ``middleware``
        is added after the app's for this handler only.
        """
        check_queue(queue)
        # The workers' own argument checks, now rather than when the app runs.
        check_worker_args(
            None,
            concurrency=concurrency,
            prefetch=prefetch,
            tenants=tenants,
            shutdown_timeout=shutdown_timeout,
            middleware=middleware,
            retry=retry,
            check_handler=False,
        )
        extra = check_middleware(middleware)

        def register(func: F) -> F:
            _arguments(func)  # fail at import time, not at the first message
            if any(h.queue == queue for h in self.handlers):
                raise ConfigurationError(
                    f"queue {queue!r} already has a handler in this app; one handler per queue"
                )
            self.handlers.append(
                HandlerSpec(
                    queue,
                    func,
                    concurrency,
                    prefetch,
                    tenants,
                    shutdown_timeout,
                    dict(declare),
                    retry,
                    extra,
                )
            )
            return func

        return register

    # -- running -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every handler gracefully; safe from any thread or a signal handler."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.stop()

    def wait_running(self, timeout: float = 10.0) -> bool:
        """Block until every handler is consuming (for tests and hosting code)."""
        return self._running.wait(timeout)

    @property
    def workers(self) -> list[Any]:
        """The running workers (sync and async), for health checks."""
        with self._lock:
            return list(self._workers)

    @property
    def connected(self) -> bool:
        """True while every handler's worker is connected and consuming."""
        workers = self.workers
        return (
            self._running.is_set()
            and not self._stop.is_set()
            and len(workers) == len(self.handlers)
            and all(w.connected for w in workers)
        )

    def run(
        self,
        url: str | None = None,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
    ) -> None:
        """Run every handler until ``stop()``, SIGTERM or SIGINT, then stop gracefully.

        ``concurrency`` and ``prefetch`` override every handler's own.
        """
        if not self.handlers:
            raise ConfigurationError("this app has no handlers: decorate one with @app.handler")
        target = url or self.url
        self._stop.clear()
        restore = self._install_signals()
        try:
            self._run(target, concurrency, prefetch)
        finally:
            restore()
            self._running.clear()

    def _options(
        self, h: HandlerSpec, concurrency: int | None, prefetch: int | None
    ) -> dict[str, Any]:
        conc = concurrency or h.concurrency
        pre = prefetch or h.prefetch
        if pre is not None and pre < conc:
            pre = conc
        return {
            "concurrency": conc,
            "prefetch": pre,
            "tenants": h.tenants,
            "shutdown_timeout": h.shutdown_timeout,
            "retry": h.retry,
            "middleware": h.middleware,
            "max_outage": self.max_outage,
        }

    def _worker(
        self, broker: Any, h: HandlerSpec, concurrency: int | None, prefetch: int | None
    ) -> Any:
        """The worker of handler ``h`` on ``broker`` (sync or ``workq.aio``), registered."""
        worker = broker.worker(h.queue, _bound(h.func), **self._options(h, concurrency, prefetch))
        with self._lock:
            self._workers.append(worker)
        return worker

    def _run(self, url: str | None, concurrency: int | None, prefetch: int | None) -> None:
        from .broker import connect

        sync = [h for h in self.handlers if not h.is_async]
        asynchronous = [h for h in self.handlers if h.is_async]
        errors: list[BaseException] = []
        threads: list[threading.Thread] = []

        broker = self._connect(lambda: connect(url, middleware=self.middleware), sync)
        if broker is None:
            return  # stopped before the broker could be reached
        with broker:
            for h in sync:
                worker = self._worker(broker, h, concurrency, prefetch)
                threads.append(
                    threading.Thread(
                        target=self._guard(worker.run, errors),
                        name=f"workq-app-{h.queue}",
                        daemon=True,
                    )
                )
            if asynchronous:
                import asyncio  # here, not at the top: a sync-only app never loads asyncio

                threads.append(
                    threading.Thread(
                        target=self._guard(
                            lambda: asyncio.run(
                                self._run_async(url, asynchronous, concurrency, prefetch)
                            ),
                            errors,
                        ),
                        name="workq-app-aio",
                        daemon=True,
                    )
                )
            for t in threads:
                t.start()
            try:
                self._wait_started(sync, asynchronous)
                self._running.set()
                while not self._stop.wait(0.2):
                    if errors or not any(t.is_alive() for t in threads):
                        break
            finally:
                self.stop()
                for t in threads:
                    t.join()
                with self._lock:
                    self._workers.clear()
        if errors:
            raise errors[0]

    def _wait_started(self, sync: list[HandlerSpec], asynchronous: list[HandlerSpec]) -> None:
        expected = len(sync) + len(asynchronous)
        while not self._stop.is_set():
            with self._lock:
                workers = list(self._workers)
            if len(workers) >= expected and all(w.running for w in workers):
                return
            self._stop.wait(0.02)

    async def _run_async(
        self,
        url: str | None,
        handlers: list[HandlerSpec],
        concurrency: int | None,
        prefetch: int | None,
    ) -> None:
        broker = await self._connect_async(url, handlers)
        if broker is None:
            return
        async with broker:
            runs = []
            for h in handlers:
                worker = self._worker(broker, h, concurrency, prefetch)
                if self._stop.is_set():
                    worker.stop()
                runs.append(worker.run())
            import asyncio  # loaded already: this runs on an event loop

            await asyncio.gather(*runs)

    def _connect(self, make: Callable[[], Any], handlers: list[HandlerSpec]) -> Any:
        """Connect and declare, riding out an unreachable broker like a worker does."""
        link = Link("app", self.max_outage)
        while not self._stop.is_set():
            broker = None
            try:
                broker = make()
                for h in handlers:
                    if h.declare:
                        broker.declare(h.queue, **h.declare)
            except Exception as exc:
                if broker is not None:
                    broker.close()
                self._stop.wait(link.failed(exc))
                continue
            link.up()
            return broker
        return None

    async def _connect_async(self, url: str | None, handlers: list[HandlerSpec]) -> Any:
        from . import aio

        link = Link("app", self.max_outage)
        while not self._stop.is_set():
            broker = None
            try:
                broker = await aio.connect(url, middleware=self.middleware)
                for h in handlers:
                    if h.declare:
                        await broker.declare(h.queue, **h.declare)
            except Exception as exc:
                if broker is not None:
                    await broker.close()
                await sleep_unless(self._stop, link.failed(exc))
                continue
            link.up()
            return broker
        return None

    def _guard(self, fn: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                log.exception("a workq app handler stopped with an error")
                errors.append(exc)
                self._stop.set()

        return run

    def _install_signals(self) -> Callable[[], None]:
        return install_stop_signals(self.stop, "workq app")
