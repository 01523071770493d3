"""workq.App on the embedded SQLite backend: typed handlers, rejection, async, stop."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel

import workq
from workq.testing.conformance import until

pytestmark = pytest.mark.sqlite


class Job(BaseModel):
    n: int


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'app.db'}"


@pytest.fixture
def queue() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


@contextmanager
def running(app: workq.App, url: str) -> Iterator[threading.Thread]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            app.run(url)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert app.wait_running(15), errors
    try:
        yield thread
    finally:
        app.stop()
        thread.join(30)
        assert not thread.is_alive()
        assert not errors


def test_typed_handler_validates_and_rejects_bad_bodies(url: str, queue: str) -> None:
    app = workq.App()
    seen: list[int] = []

    @app.handler(queue, concurrency=2)
    def handle(job: Job) -> None:
        seen.append(job.n)

    with running(app, url), workq.connect(url) as broker:
        with broker.producer() as p:
            p.publish(queue, {"n": 1})
            p.publish(queue, {"n": "not a number"})
            p.publish(queue, Job(n=2))
        until(
            lambda: sorted(seen) == [1, 2] and broker.stats(queue).dead_letters == 1,
            what="two jobs handled and one dead letter",
        )
        dead = broker.dead_letters(queue)
        assert "not a valid Job" in dead[0].reason
        assert "n" in dead[0].reason
        # The worker kept running after the bad body.
        broker.producer().publish(queue, {"n": 3})
        until(lambda: 3 in seen, what="the job after the bad body")


def test_model_and_delivery_parameters(url: str, queue: str) -> None:
    app = workq.App(url)
    got: list[tuple[int, str | None]] = []

    @app.handler(queue, max_attempts=3)
    def handle(job: Job, d: workq.Delivery) -> None:
        got.append((job.n, d.tenant))

    with running(app, url), workq.connect(url) as broker:
        broker.producer().publish(queue, {"n": 5}, tenant="acme")
        until(lambda: got == [(5, "acme")], what="the typed job")
        assert broker.spec(queue).max_attempts == 3


def test_async_handler_runs_beside_a_sync_one(url: str, queue: str) -> None:
    app = workq.App()
    sync_seen: list[str] = []
    async_seen: list[int] = []

    @app.handler(queue + "-s")
    def plain(d: workq.Delivery) -> None:
        sync_seen.append(d.text())

    @app.handler(queue + "-a", concurrency=2)
    async def coro(job: Job) -> None:
        async_seen.append(job.n)

    with running(app, url), workq.connect(url) as broker:
        broker.producer().publish(queue + "-s", "hi")
        broker.producer().publish(queue + "-a", {"n": 9})
        broker.producer().publish(queue + "-a", {"n": "x"})
        until(lambda: sync_seen == ["hi"] and async_seen == [9], what="both handlers")
        until(lambda: broker.stats(queue + "-a").dead_letters == 1, what="a dead letter")


def test_registration_errors_are_clear() -> None:
    app = workq.App()

    with pytest.raises(workq.ConfigurationError, match=r"pydantic model or workq\.Delivery"):

        @app.handler("q1")
        def bad(x: int) -> None: ...

    @app.handler("q2")
    def ok(d: workq.Delivery) -> None: ...

    with pytest.raises(workq.ConfigurationError, match="already has a handler"):
        app.handler("q2")(ok)
    with pytest.raises(ValueError, match="concurrency"):
        app.handler("q3", concurrency=0)
    with pytest.raises(workq.ConfigurationError, match="no handlers"):
        workq.App().run("memory://")


@pytest.mark.rabbitmq
def test_app_rides_out_an_unreachable_broker_at_start_and_stop_works_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: every connect is refused at once.
    url = "amqp://guest:guest@127.0.0.1:1/?reconnect_attempts=1"
    app = workq.App(url)

    @app.handler("q", max_attempts=3)
    def handle(d: workq.Delivery) -> None: ...

    t = threading.Thread(target=app.run)
    t.start()
    until(
        lambda: (
            sum("reconnect attempt" in r.getMessage() for r in caplog.records) >= 1
            or sum("connection lost" in r.getMessage() for r in caplog.records) >= 1
        ),
        what="a failed connection attempt",
    )
    assert t.is_alive() and not app.connected
    app.stop()
    t.join(10)
    assert not t.is_alive()

    bounded = workq.App(url, max_outage=0.5)
    bounded.handler("q")(handle)
    with pytest.raises(workq.BrokerUnavailable, match=r"max_outage=0\.5s"):
        bounded.run()
