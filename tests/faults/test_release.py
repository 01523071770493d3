"""A release is not an attempt (memory and SQLite; the broker backends test their own):
messages given back unstarted at shutdown, and handlers cut off at ``shutdown_timeout``,
come back with the same ``attempt``; a cut-off sync handler's late settlement is dropped,
neither raising nor settling the message someone else now holds."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import unique, until

from .conftest import backend_url


@pytest.fixture(params=["memory", "sqlite"])
def local_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, request.param, tmp_path)


def _attempts(broker: workq.Broker, queue: str, count: int) -> list[int]:
    """Take ``count`` deliveries, ack them, return their attempts."""
    attempts: list[int] = []
    with broker.consumer(queue, prefetch=count) as consumer:
        while len(attempts) < count:
            d = until(lambda: consumer.get(timeout=0.5), what="a redelivery")
            attempts.append(d.attempt)
            d.ack()
    return attempts


def test_unstarted_messages_come_back_with_the_same_attempt(local_url: str) -> None:
    queue = unique("release")
    started = threading.Event()
    go_on = threading.Event()

    def handle(d: workq.Delivery) -> None:
        started.set()
        go_on.wait(30)

    with workq.connect(local_url) as broker:
        broker.producer().publish_many(queue, [b"a", b"b", b"c", b"d", b"e"])
        worker = broker.worker(queue, handle, concurrency=1, prefetch=5, shutdown_timeout=30)
        thread = threading.Thread(target=worker.run)
        thread.start()
        assert started.wait(30)
        until(lambda: broker.stats(queue).ready == 0, what="the rest prefetched")
        worker.stop()
        until(lambda: broker.stats(queue).ready == 4, what="the unstarted four given back")
        go_on.set()
        thread.join(30)
        assert not thread.is_alive()
        assert _attempts(broker, queue, 4) == [1, 1, 1, 1]


def test_a_handler_cut_off_at_shutdown_timeout_comes_back_with_the_same_attempt(
    local_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue = unique("cutoff")
    started = threading.Event()
    go_on = threading.Event()
    finished = threading.Event()

    def handle(d: workq.Delivery) -> None:
        started.set()
        go_on.wait(30)
        finished.set()

    with workq.connect(local_url) as broker:
        broker.producer().publish(queue, b"long job")
        worker = broker.worker(queue, handle, concurrency=1, shutdown_timeout=0.1)
        thread = threading.Thread(target=worker.run)
        thread.start()
        assert started.wait(30)
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()
        with broker.consumer(queue) as consumer:
            again = until(lambda: consumer.get(timeout=0.5), what="the cut-off message")
            assert again.attempt == 1
            # The cut-off handler finishes now: its settlement is dropped quietly, and
            # does not touch the message this consumer holds.
            with caplog.at_level(logging.INFO, logger="workq"):
                go_on.set()
                assert finished.wait(30)
                until(lambda: "is skipped" in caplog.text, what="the late settlement dropped")
            assert "settling" not in caplog.text
            assert broker.stats(queue).in_flight == 1
            again.ack()
        stats = broker.stats(queue)
        assert (stats.ready, stats.in_flight, stats.dead_letters) == (0, 0, 0)


def test_aio_release_and_cut_off_keep_the_attempt(local_url: str) -> None:
    queue = unique("aiorelease")

    async def main() -> list[int]:
        started = asyncio.Event()

        async def handle(d: workq.aio.Delivery) -> None:
            started.set()
            await asyncio.sleep(30)  # cut off at shutdown_timeout

        async with await workq.aio.connect(local_url) as broker:
            await broker.producer().publish_many(queue, [b"a", b"b", b"c"])
            worker = broker.worker(queue, handle, concurrency=1, prefetch=3, shutdown_timeout=0.1)
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(started.wait(), 30)
            worker.stop()
            await asyncio.wait_for(task, 30)
            attempts = []
            async with broker.consumer(queue, prefetch=3) as consumer:
                while len(attempts) < 3:
                    d = await consumer.get(timeout=5)
                    assert d is not None
                    attempts.append(d.attempt)
                    await d.ack()
            return attempts

    assert asyncio.run(main()) == [1, 1, 1]
