"""A release is not an attempt, and workers ride out a broker outage (sync and aio).

Messages a stopping worker gives back unstarted, and those whose handler is cut off at
``shutdown_timeout``, are re-published with the attempt they had (then acked), so neither
a quorum queue's ``x-delivery-count`` nor a classic queue's ``redelivered`` flag counts
them: rolling restarts alone never dead-letter a message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit

import pytest

import workq
import workq.aio
from workq.testing.conformance import unique, until
from workq.testing.faults import FaultProxy

pytestmark = pytest.mark.rabbitmq

WAIT = 30.0


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_release_at_shutdown_is_not_an_attempt(rabbitmq_url: str, queue_type: str) -> None:
    q = unique()
    started = threading.Event()
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q, queue_type=queue_type, max_attempts=2)
        broker.producer().publish_many(q, [b"slow", b"a", b"b", b"c"])

        def handler(d: workq.Delivery) -> None:
            started.set()
            time.sleep(3)  # cut off at shutdown_timeout: this handler never finishes in time

        for _ in range(3):  # three rolling restarts, each cutting the handler off
            started.clear()
            worker = broker.worker(q, handler, concurrency=1, prefetch=4, shutdown_timeout=0.1)
            t = threading.Thread(target=worker.run)
            t.start()
            until(started.is_set, WAIT, "the handler to start")
            worker.stop()
            t.join(timeout=WAIT)
            assert not t.is_alive()
        with broker.consumer(q, prefetch=4) as c:
            got: list[workq.Delivery] = []
            while len(got) < 4:
                d = c.get(timeout=WAIT)
                assert d is not None
                got.append(d)
            assert sorted(d.attempt for d in got) == [1, 1, 1, 1]
            for d in got:
                d.ack()
        assert broker.stats(q).dead_letters == 0


def test_aio_release_is_not_an_attempt(rabbitmq_url: str) -> None:
    q = unique()

    async def scenario() -> list[int]:
        async with await workq.aio.connect(rabbitmq_url) as broker:
            async with broker.producer() as p:
                await p.publish_many(q, [b"a", b"b", b"c"])
            for _ in range(3):
                async with broker.consumer(q, prefetch=3) as c:
                    d = await c.get(timeout=WAIT)
                    assert d is not None  # held, never settled: released at close
            attempts = []
            async with broker.consumer(q, prefetch=3) as c:
                for _ in range(3):
                    d = await c.get(timeout=WAIT)
                    assert d is not None
                    attempts.append(d.attempt)
                    await d.ack()
            return attempts

    assert asyncio.run(scenario()) == [1, 1, 1]


def test_worker_rides_out_a_broker_outage(rabbitmq_url: str) -> None:
    """The connection drops for a few seconds under a running worker and producer: the
    worker keeps running and everything confirmed is processed."""
    parts = urlsplit(rabbitmq_url)
    assert parts.hostname is not None and parts.port is not None
    q = unique()
    done: set[str] = set()
    with FaultProxy(parts.hostname, parts.port) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?connect_timeout=2&publish_timeout=3"
        with workq.connect(url) as broker, workq.connect(rabbitmq_url) as direct:
            broker.declare(q)
            worker = broker.worker(q, lambda d: done.add(d.id), concurrency=2)
            t = threading.Thread(target=worker.run)
            t.start()
            try:
                confirmed = set(direct.producer().publish_many(q, [b"before"] * 20))
                until(lambda: confirmed <= done, WAIT, "messages before the outage")
                proxy.drop()
                confirmed |= set(direct.producer().publish_many(q, [b"during"] * 20))
                time.sleep(3)  # the outage itself: what the worker must ride out
                proxy.restore()
                confirmed |= set(direct.producer().publish_many(q, [b"after"] * 20))
                until(lambda: confirmed <= done, WAIT, "every confirmed message processed")
                assert t.is_alive()
                until(lambda: worker.connected, WAIT, "the worker to say it is connected")
            finally:
                worker.stop()
                t.join(timeout=WAIT)
