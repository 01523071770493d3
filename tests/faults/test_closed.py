"""Closed means closed: every call on a closed broker, producer or consumer, and settling
a delivery whose consumer closed, raises ``workq.Closed``, on every backend, sync and aio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import workq
from workq.testing.conformance import unique


def test_closed_producer_refuses_to_publish(url: str) -> None:
    queue = unique("closed")
    with workq.connect(url) as broker:
        producer = broker.producer()
        producer.publish(queue, b"before")
        producer.close()
        producer.close()  # idempotent
        with pytest.raises(workq.Closed, match="cannot publish: this producer is closed"):
            producer.publish(queue, b"after")
        with pytest.raises(workq.Closed, match="cannot publish_many"):
            producer.publish_many(queue, [b"after"])
        with pytest.raises(workq.Closed), producer:
            pass
        assert broker.stats(queue).ready + broker.stats(queue).in_flight <= 1


def test_closed_broker_refuses_every_call(url: str) -> None:
    queue = unique("closed")
    broker = workq.connect(url)
    producer = broker.producer()
    broker.declare(queue)
    broker.close()
    broker.close()  # idempotent
    calls: list[tuple[str, Callable[[], object]]] = [
        ("declare", lambda: broker.declare(queue)),
        ("open a producer", broker.producer),
        ("open a consumer", lambda: broker.consumer(queue)),
        ("make a worker", lambda: broker.worker(queue, lambda d: None)),
        ("read stats", lambda: broker.stats(queue)),
        ("read dead letters", lambda: broker.dead_letters(queue)),
        ("redrive", lambda: broker.redrive(queue)),
        ("publish", lambda: producer.publish(queue, b"x")),
    ]
    for call, fn in calls:
        with pytest.raises(workq.Closed, match=f"cannot {call}"):
            fn()
    assert "closed" in repr(broker)


def test_closed_consumer_refuses_to_get(url: str) -> None:
    queue = unique("closed")
    with workq.connect(url) as broker:
        consumer = broker.consumer(queue)
        consumer.close()
        consumer.close()  # idempotent
        assert consumer.closed
        with pytest.raises(workq.Closed, match="cannot get: this consumer is closed"):
            consumer.get(timeout=0)
        with pytest.raises(workq.Closed):
            consumer.release_unstarted()
        assert list(consumer) == []


def test_consumer_of_a_closed_broker_refuses_to_get(url: str) -> None:
    queue = unique("closed")
    broker = workq.connect(url)
    consumer = broker.consumer(queue)
    broker.close()
    assert consumer.closed
    with pytest.raises(workq.Closed, match="its broker is closed"):
        consumer.get(timeout=0)


@pytest.mark.parametrize("settle", ["ack", "nack", "reject"])
def test_settling_after_the_consumer_closed_raises(url: str, settle: str) -> None:
    queue = unique("closed")
    with workq.connect(url) as broker:
        broker.producer().publish(queue, b"x")
        consumer = broker.consumer(queue)
        delivery = workq.testing.conformance.until(lambda: consumer.get(timeout=0.5))
        consumer.close()
        with pytest.raises(workq.Closed, match="went back to the queue"):
            getattr(delivery, settle)()
        assert not delivery.settled
        # Given back on close, so delivered again: nothing was lost or settled.
        with broker.consumer(queue) as again:
            redelivered = workq.testing.conformance.until(lambda: again.get(timeout=0.5))
            assert redelivered.body == b"x"
            redelivered.ack()


# -- aio ---------------------------------------------------------------------------


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_aio_closed_objects_refuse_every_call(url: str) -> None:
    queue = unique("closed")

    async def main() -> None:
        broker = await workq.aio.connect(url)
        producer = broker.producer()
        await producer.publish(queue, b"x")
        await producer.close()
        with pytest.raises(workq.Closed, match="cannot publish"):
            await producer.publish(queue, b"y")
        consumer = await broker.consumer(queue)
        delivery = None
        for _ in range(60):
            delivery = await consumer.get(timeout=0.5)
            if delivery is not None:
                break
        assert delivery is not None
        await consumer.close()
        with pytest.raises(workq.Closed, match="cannot get"):
            await consumer.get(timeout=0)
        with pytest.raises(workq.Closed, match="went back to the queue"):
            await delivery.ack()
        other = await broker.consumer(queue)
        await broker.close()
        await broker.close()
        with pytest.raises(workq.Closed, match="its broker is closed"):
            await other.get(timeout=0)
        with pytest.raises(workq.Closed, match="cannot declare"):
            await broker.declare(queue)
        with pytest.raises(workq.Closed, match="cannot read stats"):
            await broker.stats(queue)
        with pytest.raises(workq.Closed, match="cannot open a consumer"):
            broker.consumer(queue)
        with pytest.raises(workq.Closed, match="cannot open a producer"):
            broker.producer()

    run(main())
