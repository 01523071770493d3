"""Single publishes from many threads and tasks at once, on one broker connection.

The sync driver writes a small publish on the caller's own thread when the connection
is free, and hands it to the I/O thread when not; the async one awaits a single
publish in the caller's task. Either way every publish is confirmed before it returns,
none is lost or doubled, and each thread's (or task's) messages keep their order.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import workq
from workq.testing.conformance import unique

pytestmark = pytest.mark.rabbitmq

WAIT = 60.0
THREADS = 8
EACH = 25


def _check_order(bodies: list[str], senders: int, each: int) -> None:
    """Every ``sender:index`` body once, each sender's in increasing index order."""
    assert sorted(bodies) == sorted(f"{s}:{i}" for s in range(senders) for i in range(each))
    last: dict[str, int] = {}
    for body in bodies:
        sender, index = body.split(":")
        assert int(index) > last.get(sender, -1), f"{body} after {last[sender]}"
        last[sender] = int(index)


def test_threads_publishing_single_messages_at_once(rabbitmq_url: str) -> None:
    q = unique()
    errors: list[BaseException] = []
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
        # A consumer on the same connection keeps the I/O thread busy with deliveries
        # and acks while the publishes are written from the publishers' threads.
        other = unique()
        broker.declare(other)
        with broker.producer() as p:
            p.publish_many(other, [b"busy"] * 200)

            def publisher(sender: int) -> None:
                try:
                    for i in range(EACH):
                        p.publish(q, f"{sender}:{i}")
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=publisher, args=(s,)) for s in range(THREADS)]
            with broker.consumer(other, prefetch=10) as busy:
                for t in threads:
                    t.start()
                for _ in range(200):
                    d = busy.get(timeout=WAIT)
                    assert d is not None
                    d.ack()
                for t in threads:
                    t.join(WAIT)
            assert not errors, errors
            assert not any(t.is_alive() for t in threads)
        # Every publish returned: each was confirmed, so all are there.
        assert broker.stats(q).ready == THREADS * EACH
        bodies = []
        with broker.consumer(q, prefetch=50) as c:
            for _ in range(THREADS * EACH):
                d = c.get(timeout=WAIT)
                assert d is not None
                bodies.append(d.text())
                d.ack()
    _check_order(bodies, THREADS, EACH)


def test_tasks_publishing_single_messages_at_once(rabbitmq_url: str) -> None:
    q = unique()

    async def main() -> list[str]:
        async with await workq.aio.connect(rabbitmq_url) as broker:
            await broker.declare(q)
            async with broker.producer() as p:

                async def publisher(sender: int) -> None:
                    for i in range(EACH):
                        await p.publish(q, f"{sender}:{i}")

                await asyncio.gather(*(publisher(s) for s in range(THREADS)))
            assert (await broker.stats(q)).ready == THREADS * EACH
            bodies = []
            async with broker.consumer(q, prefetch=50) as c:
                for _ in range(THREADS * EACH):
                    d = await c.get(timeout=WAIT)
                    assert d is not None
                    bodies.append(d.text())
                    await d.ack()
            return bodies

    _check_order(asyncio.run(main()), THREADS, EACH)


def test_single_publish_to_a_missing_exchange_raises(rabbitmq_url: str) -> None:
    # The caller-thread path meets the broker's refusal (the channel is closed under
    # it) like the I/O thread's: a clear error, and the next publish works.
    q = unique()
    with workq.connect(rabbitmq_url) as broker, broker.producer() as p:
        broker.declare(q)
        p.publish(q, "first")
        with pytest.raises(workq.PublishError):
            p.publish(None, "x", exchange=unique(), routing_key="k")
        p.publish(q, "second")
        assert broker.stats(q).ready == 2
