"""Middleware, RetryPolicy and Outcome, through both twins, on memory://."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import workq
from workq import Outcome, RetryPolicy
from workq.testing.conformance import until


class Job(BaseModel):
    n: int


class Recorder(workq.Middleware):
    """Records every hook call; adds a header on publish; wraps handlers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _add(self, name: str, value: Any) -> None:
        with self.lock:
            self.events.append((name, value))

    def names(self, name: str) -> list[Any]:
        with self.lock:
            return [v for n, v in self.events if n == name]

    def before_publish(self, ctx: workq.PublishContext) -> None:
        for msg in ctx.messages:
            msg.headers["x-recorded"] = "yes"
        self._add("before_publish", (ctx.queue, len(ctx.messages)))

    def after_publish(self, ctx: workq.PublishContext) -> None:
        self._add("after_publish", (ctx.queue, ctx.error, ctx.duration is not None))

    def before_process(self, ctx: workq.ProcessContext) -> None:
        self._add("before_process", ctx.delivery.headers.get("x-recorded"))

    @contextlib.contextmanager
    def _wrap(self, ctx: workq.ProcessContext) -> Iterator[None]:
        self._add("enter", ctx.delivery.id)
        try:
            yield
        finally:
            self._add("exit", ctx.delivery.id)

    def process(self, ctx: workq.ProcessContext) -> contextlib.AbstractContextManager[None]:
        return self._wrap(ctx)

    def after_process(self, ctx: workq.ProcessContext) -> None:
        assert ctx.duration is not None and ctx.duration >= 0
        self._add("after_process", (ctx.outcome, type(ctx.error).__name__ if ctx.error else None))

    def on_settle(self, ctx: workq.SettleContext) -> None:
        self._add("settle", (ctx.outcome, ctx.delay, ctx.reason))


def handler_for(kind: str) -> Callable[[Any], None]:
    def handle(d: Any) -> None:
        body = d.text()
        if body == "retry":
            raise workq.Retry(delay=0.01)
        if body == "reject":
            raise workq.Reject("bad")
        if body == "boom":
            raise KeyError("boom")

    return handle


def run_sync(broker: workq.Broker, worker: workq.Worker, done: Callable[[], bool]) -> None:
    t = threading.Thread(target=worker.run)
    t.start()
    try:
        until(done, what="the worker to process everything")
    finally:
        worker.stop()
        t.join(10)
    assert not t.is_alive()


def test_sync_middleware_sees_publish_handling_and_settlement() -> None:
    rec = Recorder()
    with workq.connect("memory://", middleware=[rec]) as broker:
        broker.declare("q", max_attempts=1)
        with broker.producer() as p:
            p.publish("q", "ok")
            p.publish_many("q", ["retry", "reject"])
        assert rec.names("before_publish") == [("q", 1), ("q", 2)]
        assert rec.names("after_publish") == [("q", None, True), ("q", None, True)]
        worker = broker.worker("q", handler_for("sync"), concurrency=1)
        run_sync(broker, worker, lambda: worker.processed == 3)
    assert rec.names("before_process") == ["yes", "yes", "yes"]
    assert len(rec.names("enter")) == len(rec.names("exit")) == 3
    # max_attempts=1: the retry is out of attempts, so it is dead-lettered.
    assert sorted(rec.names("after_process")) == sorted(
        [
            (Outcome.ACK, None),
            (Outcome.DEAD_LETTER, "Retry"),
            (Outcome.DEAD_LETTER, "Reject"),
        ]
    )
    settled = sorted(o.value for o, _, _ in rec.names("settle"))
    assert settled == ["ack", "dead_letter", "dead_letter"]
    assert worker.settled["dead_letter"] == 2 and worker.settled["ack"] == 1


def test_async_middleware_is_the_same_object_and_sees_the_same() -> None:
    rec = Recorder()

    async def main() -> int:
        async with await workq.aio.connect("memory://", middleware=[rec]) as broker:
            async with broker.producer() as p:
                await p.publish("q", "ok")
                await p.publish("q", "retry")

            seen: list[str] = []

            async def handle(d: workq.aio.Delivery) -> None:
                if d.text() == "retry" and d.attempt == 1:
                    raise workq.Retry(delay=0.01)
                seen.append(d.text())

            worker = broker.worker("q", handle, concurrency=2)
            run = asyncio.create_task(worker.run())
            while len(seen) < 2:
                assert not run.done(), "the worker ended early"
                await asyncio.sleep(0.01)
            worker.stop()
            await asyncio.wait_for(run, 10)
            return worker.processed

    assert asyncio.run(main()) == 3
    outcomes = [o for o, _ in rec.names("after_process")]
    assert sorted(outcomes) == [Outcome.ACK, Outcome.ACK, Outcome.RETRY]
    assert rec.names("before_process") == ["yes"] * 3
    retried = [s for s in rec.names("settle") if s[0] is Outcome.RETRY]
    assert retried == [(Outcome.RETRY, 0.01, None)]


def test_worker_middleware_adds_to_the_brokers_and_can_swallow_errors() -> None:
    class Swallow(workq.Middleware):
        @contextlib.contextmanager
        def _quiet(self) -> Iterator[None]:
            with contextlib.suppress(KeyError):
                yield

        def process(self, ctx: workq.ProcessContext) -> contextlib.AbstractContextManager[None]:
            return self._quiet()

    outer = Recorder()
    with workq.connect("memory://", middleware=[outer]) as broker:
        broker.producer().publish("q", "boom")
        worker = broker.worker("q", handler_for("sync"), middleware=[Swallow()])
        run_sync(broker, worker, lambda: worker.processed == 1)
        assert broker.stats("q").ready == 0 and broker.dead_letters("q") == []
    assert outer.names("after_process") == [(Outcome.ACK, None)]


def test_failing_observer_hooks_do_not_break_handling(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(workq.Middleware):
        def after_process(self, ctx: workq.ProcessContext) -> None:
            raise RuntimeError("observer bug")

        def on_settle(self, ctx: workq.SettleContext) -> None:
            raise RuntimeError("observer bug")

    with workq.connect("memory://", middleware=[Broken()]) as broker:
        broker.producer().publish("q", "ok")
        worker = broker.worker("q", handler_for("sync"))
        run_sync(broker, worker, lambda: worker.processed == 1)
        assert broker.stats("q").ready == 0
    assert "Broken.after_process failed" in caplog.text


def test_retry_policy_sets_the_delay_and_which_errors_retry() -> None:
    rec = Recorder()
    policy = RetryPolicy(base=0.01, cap=0.02, jitter=False, retry_on=(TimeoutError,))
    with workq.connect("memory://", middleware=[rec]) as broker:
        broker.declare("q", max_attempts=3)
        calls: list[str] = []

        def handle(d: workq.Delivery) -> None:
            calls.append(d.text())
            if d.text() == "slow" and d.attempt < 3:
                raise TimeoutError("slow")
            if d.text() == "bug":
                raise KeyError("bug")

        broker.producer().publish_many("q", ["slow", "bug"])
        worker = broker.worker("q", handle, retry=policy)
        run_sync(broker, worker, lambda: worker.processed == 4)
        (dead,) = broker.dead_letters("q")
    assert dead.body == b"bug" and "not retried" in dead.reason and "KeyError" in dead.reason
    delays = [d for o, d, _ in rec.names("settle") if o is Outcome.RETRY]
    assert delays == [0.01, 0.02]  # base, then doubled up to the cap


def test_retry_policy_and_outcome_values() -> None:
    assert [o.value for o in Outcome] == ["ack", "retry", "dead_letter", "release"]
    policy = RetryPolicy(base=1.0, cap=300.0, jitter=True)
    for attempt in range(1, 12):
        full = min(2 ** (attempt - 1), 300.0)
        assert full / 2 <= policy.delay(attempt) <= full
    assert RetryPolicy(jitter=False).delay(2, base=3.0) == 6.0  # the queue's retry_delay
    assert RetryPolicy(retry_on=KeyError).retry_on == (KeyError,)  # type: ignore[arg-type]
    for bad in ({"base": -1.0}, {"cap": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RetryPolicy(**bad)
    with pytest.raises(TypeError, match="base"):
        RetryPolicy(base="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy(retry_on=("KeyError",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="jitter"):
        RetryPolicy(jitter="yes")  # type: ignore[arg-type]


def test_bad_middleware_and_worker_arguments_are_named() -> None:
    with pytest.raises(TypeError, match=r"not a workq\.Middleware"):
        workq.connect("memory://", middleware=[object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"a list of workq\.Middleware"):
        workq.connect("memory://", middleware=workq.Middleware())  # type: ignore[arg-type]
    with workq.connect("memory://") as broker:
        with pytest.raises(TypeError, match="retry="):
            broker.worker("q", print, retry=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_outage"):
            broker.worker("q", print, max_outage=-1)
        with pytest.raises(TypeError, match="not callable"):
            broker.worker("q", "handler")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry="):
        workq.App().handler("q", retry="often")  # type: ignore[arg-type]


def test_app_middleware_and_per_handler_retry_wrap_sync_and_async_handlers() -> None:
    rec = Recorder()
    url = "memory://app-middleware"
    app = workq.App(url, middleware=[rec])
    done: list[int] = []

    @app.handler("sync-q", retry=RetryPolicy(base=0.01, jitter=False))
    def sync_handler(job: Job) -> None:
        done.append(job.n)

    @app.handler("async-q")
    async def async_handler(job: Job, d: workq.aio.Delivery) -> None:
        done.append(job.n * 10)

    t = threading.Thread(target=app.run)
    t.start()
    try:
        assert app.wait_running(10)
        until(lambda: app.connected, what="the app to be connected")
        with workq.connect(url) as broker:
            broker.producer().publish("sync-q", {"n": 1})
            broker.producer().publish("async-q", {"n": 2})
        until(lambda: sorted(done) == [1, 20], what="both handlers")
        until(lambda: len(rec.names("after_process")) == 2, what="both observed")
    finally:
        app.stop()
        t.join(10)
    assert not app.connected
    # Published from outside the app (no middleware), so no header came along.
    assert rec.names("before_process") == [None, None]


@pytest.mark.parametrize(
    "module",
    [
        "workq.middleware",
        "workq.retry",
        "workq.outcome",
        "workq.policy",
        "workq.logs",
        "workq.backends",
        "workq.contrib.prometheus",
    ],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
