"""``workq.Middleware``: hooks around publishing, handling and settlement.

One middleware object serves the sync API and ``workq.aio`` alike: every hook is a plain
(non-async) method that does no I/O of its own, called on the thread or task doing the
work, so what a hook puts in a context variable (a tracing span, say) is current while
the handler runs. Hooks see:

- publishing: :meth:`Middleware.before_publish` (may add headers) and
  :meth:`Middleware.after_publish` (the error, if any, and the duration), once per
  ``publish`` or ``publish_many`` call;
- handling: :meth:`Middleware.before_process`, :meth:`Middleware.process` (a context
  manager wrapped around the handler: it may time, trace, or change what the handler
  raises) and :meth:`Middleware.after_process` (the outcome and the duration);
- settlement: :meth:`Middleware.on_settle` for every ack, retry (with its delay), dead
  letter (with its reason) and release, whoever settled: worker, handler or consumer;
- queue depth: :meth:`Middleware.on_stats` every ``stats_interval`` seconds in a worker.

>>> import time, workq
>>> class Timing(workq.Middleware):
...     def after_process(self, ctx):
...         print(ctx.queue, ctx.outcome.value)
>>> with workq.connect("memory://", middleware=[Timing()]) as broker:
...     _ = broker.producer().publish("jobs", "x")
...     worker = broker.worker("jobs", lambda d: None)
...     t = __import__("threading").Thread(target=worker.run)
...     t.start()
...     while worker.processed < 1:
...         time.sleep(0.01)
...     worker.stop(); t.join()
jobs ack
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .outcome import Outcome

if TYPE_CHECKING:
    from .delivery import BaseDelivery
    from .driver import Outgoing, QueueStats, Received

__all__ = [
    "Chain",
    "Middleware",
    "ProcessContext",
    "PublishContext",
    "SettleContext",
    "check_middleware",
]

log = logging.getLogger("workq")


@dataclass(eq=False, slots=True)
class PublishContext:
    """One ``publish`` or ``publish_many`` call, as middleware sees it.

    ``messages`` are the encoded messages about to be sent: each has ``id``, ``lane``
    (``queue``, ``tenant``, ``priority``), ``body`` (bytes) and ``headers``, a dict that
    ``before_publish`` may add to. ``state`` is scratch space for middleware (key it by
    ``self``) carried from ``before_publish`` to ``after_publish``.
    """

    queue: str
    backend: str
    messages: Sequence[Outgoing]
    started: float = field(default_factory=time.monotonic)
    error: BaseException | None = None
    duration: float | None = None
    state: dict[Any, Any] = field(default_factory=dict)

    @property
    def batch(self) -> bool:
        """True for ``publish_many``-style batches of more than one message."""
        return len(self.messages) > 1


@dataclass(eq=False, slots=True)
class ProcessContext:
    """One delivery through a worker's handler.

    ``outcome``, ``error`` and ``duration`` (seconds in the handler) are set before
    ``after_process``. ``state`` is scratch space for middleware (key it by ``self``).
    """

    queue: str
    backend: str
    delivery: BaseDelivery
    started: float = 0.0  # time.monotonic() when the handler started
    error: BaseException | None = None
    duration: float | None = None
    outcome: Outcome | None = None
    state: dict[Any, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class SettleContext:
    """A delivery settled: ``outcome`` with its ``delay`` (retry) or ``reason`` (dead
    letter). ``delivery`` carries the message's data (id, tenant, attempt, headers...)."""

    queue: str
    backend: str
    delivery: BaseDelivery
    outcome: Outcome
    delay: float | None = None
    reason: str | None = None


class Middleware:
    """Subclass and override the hooks you need; the defaults do nothing.

    Hooks run on the thread (sync) or task (aio) doing the work and must not block on
    I/O. Exceptions from ``before_publish``, ``before_process`` and ``process`` propagate
    (a publish fails; a handler counts as failed); exceptions from the ``after_*``,
    ``on_settle`` and ``on_stats`` hooks are logged and ignored, so an observer cannot
    break message handling.

    Attributes:
        stats_interval: Seconds between ``on_stats`` calls in a worker; ``None`` (the
            default) asks for none.

    Examples:
        >>> class AddTenantHeader(Middleware):
        ...     def before_publish(self, ctx):
        ...         for msg in ctx.messages:
        ...             msg.headers["x-origin"] = "billing"
    """

    stats_interval: float | None = None

    def before_publish(self, ctx: PublishContext) -> None:
        """Before the messages are sent; may add to each ``msg.headers``."""

    def after_publish(self, ctx: PublishContext) -> None:
        """After the broker confirmed them (``ctx.error is None``) or publishing failed."""

    def before_process(self, ctx: ProcessContext) -> None:
        """Before the handler runs, on the thread or task that runs it."""

    def process(self, ctx: ProcessContext) -> AbstractContextManager[None]:
        """A context manager entered around the handler call.

        It sees the handler's exception on exit and may replace it (raise another,
        e.g. ``workq.Reject``) or swallow it (the delivery is then acked).
        """
        return contextlib.nullcontext()

    def after_process(self, ctx: ProcessContext) -> None:
        """After the handler, with ``ctx.outcome``, ``ctx.error`` and ``ctx.duration``."""

    def on_settle(self, ctx: SettleContext) -> None:
        """A delivery was acked, retried, dead-lettered or released."""

    def on_stats(self, stats: QueueStats) -> None:
        """The queue's depth, every ``stats_interval`` seconds while a worker runs."""


def check_middleware(items: Sequence[Middleware] | None) -> tuple[Middleware, ...]:
    """The middleware list as a tuple; ``TypeError`` naming anything that is not one."""
    if items is None:
        return ()
    if isinstance(items, Middleware):
        raise TypeError("middleware= takes a list of workq.Middleware objects, not one object")
    out = tuple(items)
    for m in out:
        if not isinstance(m, Middleware):
            raise TypeError(
                f"middleware={m!r} is not a workq.Middleware: subclass workq.Middleware "
                "(an instance, not the class)"
            )
    return out


def _overrides(m: Middleware, hook: str) -> bool:
    return getattr(type(m), hook) is not getattr(Middleware, hook)


_NOTHING = contextlib.nullcontext()


class Chain:
    """The middleware in force for one broker, producer, consumer or worker, in order.

    I/O-free: the sync and async twins call the same methods. Only the hooks a
    middleware overrides are called, so an unused hook costs nothing per message.
    """

    __slots__ = ("_hooks", "backend", "items", "stats_interval")

    def __init__(self, items: Sequence[Middleware] = (), backend: str = "") -> None:
        self.items = tuple(items)
        self.backend = backend
        intervals = [m.stats_interval for m in self.items if m.stats_interval]
        self.stats_interval: float | None = min(intervals) if intervals else None
        self._hooks: dict[str, tuple[Middleware, ...]] = {
            hook: tuple(m for m in self.items if _overrides(m, hook))
            for hook in (
                "before_publish",
                "after_publish",
                "before_process",
                "process",
                "after_process",
                "on_settle",
                "on_stats",
            )
        }

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Middleware]:
        return iter(self.items)

    def with_more(self, more: Sequence[Middleware]) -> Chain:
        """This chain followed by ``more``."""
        return Chain((*self.items, *more), self.backend) if more else self

    def _quietly(self, hook: str, ctx: Any, reverse: bool = False) -> None:
        chosen = self._hooks[hook]
        if not chosen:
            return
        for m in reversed(chosen) if reverse else chosen:
            try:
                getattr(m, hook)(ctx)
            except Exception:
                log.exception("middleware %s.%s failed; ignored", type(m).__name__, hook)

    # -- publishing --------------------------------------------------------------------

    def before_publish(self, queue: str, messages: Sequence[Outgoing]) -> PublishContext:
        ctx = PublishContext(queue, self.backend, messages)
        for m in self._hooks["before_publish"]:
            m.before_publish(ctx)
        return ctx

    def after_publish(self, ctx: PublishContext, error: BaseException | None) -> None:
        ctx.error = error
        ctx.duration = time.monotonic() - ctx.started
        self._quietly("after_publish", ctx, reverse=True)

    # -- handling ----------------------------------------------------------------------

    def before_process(self, ctx: ProcessContext) -> None:
        for m in self._hooks["before_process"]:
            m.before_process(ctx)

    def around(self, ctx: ProcessContext) -> AbstractContextManager[Any]:
        """The ``process`` context managers of every middleware, outermost first."""
        wrappers = self._hooks["process"]
        if not wrappers:
            return _NOTHING
        stack = ExitStack()
        try:
            for m in wrappers:
                stack.enter_context(m.process(ctx))
        except BaseException:
            stack.close()
            raise
        return stack

    def after_process(self, ctx: ProcessContext) -> None:
        self._quietly("after_process", ctx, reverse=True)

    # -- settlement --------------------------------------------------------------------

    def settled(
        self,
        item: Received,
        outcome: Outcome,
        delay: float | None = None,
        reason: str | None = None,
    ) -> None:
        """A consumer settled ``item``: what came of it (acked, retried, dead-lettered)."""
        if not self._hooks["on_settle"]:
            return
        from .delivery import BaseDelivery

        ctx = SettleContext(
            item.lane.queue,
            self.backend,
            BaseDelivery(item),
            outcome,
            delay,
            reason,
        )
        self._quietly("on_settle", ctx)

    def released(self, items: Sequence[Received]) -> None:
        """A consumer gave ``items`` back unprocessed."""
        if not self._hooks["on_settle"]:
            return
        from .delivery import BaseDelivery

        for item in items:
            ctx = SettleContext(item.lane.queue, self.backend, BaseDelivery(item), Outcome.RELEASE)
            self._quietly("on_settle", ctx)

    def stats(self, stats: QueueStats) -> None:
        self._quietly("on_stats", stats)
