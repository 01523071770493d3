"""Consuming many lanes by push (sync and aio): what a consumer was pushed and never
handed out goes back on close, uncounted; a second consumer of the same lanes is not
starved; a tenant made after the consumer started is found and pushed."""

from __future__ import annotations

import asyncio
import time

import pytest

import workq
import workq.aio
from workq import Message
from workq.testing.conformance import unique, until

pytestmark = pytest.mark.rabbitmq

TENANTS = [f"t{i}" for i in range(5)]
WAIT = 30.0
#: Lane discovery: one lane refresh (1 s), one receive slice (1 s), and slack for a
#: loaded machine.
DISCOVERY = 5.0


BODIES = sorted(f"{t}-{i}" for t in TENANTS for i in range(2))


def backlog() -> list[Message]:
    return [Message(body, tenant=body.split("-")[0]) for body in BODIES]


def test_pushed_and_unhanded_deliveries_go_back_uncounted_on_close(rabbitmq_url: str) -> None:
    q = unique("push")
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q, max_attempts=2)
        broker.producer().publish_many(q, backlog())
        with broker.consumer(q, prefetch=2) as c:
            first = c.get(timeout=WAIT)
            assert first is not None
            # Each lane pushes one (a credit of 1 each): 5 taken, 5 left ready.
            until(lambda: broker.stats(q).ready <= len(TENANTS), WAIT, "every lane to push")
        with broker.consumer(q, prefetch=10) as c:
            got: list[workq.Delivery] = []
            deadline = time.monotonic() + WAIT
            while len(got) < 10 and time.monotonic() < deadline:
                d = c.get(timeout=1.0)
                if d is not None:
                    got.append(d)
            assert sorted(d.text() for d in got) == BODIES
            assert [d.attempt for d in got] == [1] * 10
            for d in got:
                d.ack()
        assert broker.stats(q).ready == 0


def test_a_second_consumer_gets_what_the_first_has_no_room_for(rabbitmq_url: str) -> None:
    q = unique("push")
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
        broker.producer().publish_many(q, backlog())
        with broker.consumer(q, prefetch=1) as a, broker.consumer(q, prefetch=10) as b:
            held = a.get(timeout=WAIT)
            assert held is not None
            got: list[workq.Delivery] = []
            deadline = time.monotonic() + WAIT
            # a holds one per lane at most (prefetch 1 plus one per lane): b gets the rest.
            while len(got) < 10 - len(TENANTS) and time.monotonic() < deadline:
                d = b.get(timeout=1.0)
                if d is not None:
                    got.append(d)
                    d.ack()
            assert len(got) >= 10 - len(TENANTS)
            held.ack()


def test_a_new_tenant_is_found_and_pushed(rabbitmq_url: str) -> None:
    q = unique("push")
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
        broker.producer().publish(q, b"old", tenant="old")
        with broker.consumer(q, prefetch=1) as c:
            d = c.get(timeout=WAIT)
            assert d is not None and d.body == b"old"
            d.ack()
            broker.producer().publish(q, b"new", tenant="brandnew")
            sent = time.monotonic()
            d = c.get(timeout=WAIT)
            assert d is not None and d.body == b"new" and d.tenant == "brandnew"
            assert time.monotonic() - sent < DISCOVERY
            d.ack()


def test_aio_pushed_and_unhanded_deliveries_go_back_uncounted_on_close(
    rabbitmq_url: str,
) -> None:
    async def main() -> None:
        q = unique("push")
        async with await workq.aio.connect(rabbitmq_url) as broker:
            await broker.declare(q, max_attempts=2)
            async with broker.producer() as p:
                await p.publish_many(q, backlog())
            async with broker.consumer(q, prefetch=2) as c:
                assert await c.get(timeout=WAIT) is not None
                deadline = time.monotonic() + WAIT
                while (await broker.stats(q)).ready > len(TENANTS):  # every lane pushes one
                    assert time.monotonic() < deadline, "every lane to push"
                    await asyncio.sleep(0.05)
            async with broker.consumer(q, prefetch=10) as c:
                got: list[workq.aio.Delivery] = []
                deadline = time.monotonic() + WAIT
                while len(got) < 10 and time.monotonic() < deadline:
                    d = await c.get(timeout=1.0)
                    if d is not None:
                        got.append(d)
                assert sorted(d.text() for d in got) == BODIES
                assert [d.attempt for d in got] == [1] * 10
                for d in got:
                    await d.ack()

    asyncio.run(main())


def delete_queue(url: str, name: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


def test_a_deleted_lane_queue_does_not_stop_the_other_lanes(rabbitmq_url: str) -> None:
    q = unique("push")
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
        broker.producer().publish_many(q, [Message("a", tenant="a"), Message("b", tenant="b")])
        with broker.consumer(q, prefetch=2) as c:
            for _ in range(2):
                d = c.get(timeout=WAIT)
                assert d is not None
                d.ack()
        delete_queue(rabbitmq_url, f"{q}.t.a")  # still listed in the queue's registry
        with broker.consumer(q, prefetch=2) as c:
            broker.producer().publish(q, b"again", tenant="b")
            d = c.get(timeout=WAIT)
            assert d is not None and d.body == b"again"
            d.ack()


def test_aio_a_deleted_lane_queue_does_not_stop_the_other_lanes(rabbitmq_url: str) -> None:
    async def main() -> None:
        q = unique("push")
        async with await workq.aio.connect(rabbitmq_url) as broker:
            await broker.declare(q)
            async with broker.producer() as p:
                await p.publish_many(q, [Message("a", tenant="a"), Message("b", tenant="b")])
            async with broker.consumer(q, prefetch=2) as c:
                for _ in range(2):
                    d = await c.get(timeout=WAIT)
                    assert d is not None
                    await d.ack()
            await asyncio.to_thread(delete_queue, rabbitmq_url, f"{q}.t.a")
            async with broker.consumer(q, prefetch=2) as c:
                async with broker.producer() as p:
                    await p.publish(q, b"again", tenant="b")
                d = await c.get(timeout=WAIT)
                assert d is not None and d.body == b"again"
                await d.ack()

    asyncio.run(main())


def test_aio_acks_made_just_before_close_stay_acked(rabbitmq_url: str) -> None:
    """Acks are written together once per event-loop pass: those made right before the
    consumer closes still reach the broker before the channel closes, each acking exactly
    its own delivery (a wrong tag would close the channel and give everything back)."""

    async def main() -> None:
        q = unique("acks")
        async with await workq.aio.connect(rabbitmq_url) as broker:
            await broker.declare(q)
            async with broker.producer() as p:
                await p.publish_many(q, [f"m{i}".encode() for i in range(50)])
            got: list[workq.aio.Delivery] = []
            async with broker.consumer(q, prefetch=50) as c:
                while len(got) < 50:
                    d = await c.get(timeout=WAIT)
                    assert d is not None
                    got.append(d)
                for d in got[::2]:  # every other one, so no ack covers a neighbour
                    await d.ack()
                for d in got[1::2]:
                    await d.ack()
            assert sorted(d.body for d in got) == sorted(f"m{i}".encode() for i in range(50))
            async with broker.consumer(q, prefetch=10) as c:
                assert await c.get(timeout=1.0) is None
            stats = await broker.stats(q)
            assert stats.ready == 0 and stats.dead_letters == 0

    asyncio.run(main())
