"""Network faults between client and broker (the project's TCP fault proxy), sync and aio.

Each call must fail within its bound (``connect_timeout``, ``publish_timeout``, a few
seconds for ``close()``) while the network is stalled or black-holed, and the next call
after the network is back must work on the same driver: nothing dies in the background.
The bounds asserted are the documented ones plus a margin for a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import workq
import workq.aio
from workq.testing.conformance import unique
from workq.testing.faults import FaultProxy

pytestmark = pytest.mark.rabbitmq

CONNECT = 2.0
PUBLISH = 3.0
#: What a bound may overrun by on a loaded 2-core CI machine (thread wake-ups, GC).
MARGIN = 3.0
CLOSE_BOUND = 8.0


@pytest.fixture
def proxy(rabbitmq_url: str) -> Iterator[FaultProxy]:
    parts = urlsplit(rabbitmq_url)
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as p:
        yield p


def proxied(proxy: FaultProxy) -> str:
    return (
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/?connect_timeout={CONNECT}"
        f"&publish_timeout={PUBLISH}&reconnect_attempts=3"
    )


def timed(fn: object) -> float:
    start = time.monotonic()
    assert callable(fn)
    fn()
    return time.monotonic() - start


def test_connect_to_a_black_hole_fails_within_connect_timeout(proxy: FaultProxy) -> None:
    proxy.black_hole()
    start = time.monotonic()
    with pytest.raises(workq.BrokerUnavailable, match="connect_timeout"):
        workq.connect(proxied(proxy))
    assert time.monotonic() - start < CONNECT + MARGIN


@pytest.mark.parametrize("fault", ["stall", "black_hole"])
def test_publish_fails_within_its_bound_and_the_next_one_works(
    proxy: FaultProxy, fault: str
) -> None:
    q = unique()
    broker = workq.connect(proxied(proxy))
    try:
        broker.declare(q)
        p = broker.producer()
        p.publish(q, b"before")
        getattr(proxy, fault)()
        start = time.monotonic()
        with pytest.raises((workq.PublishError, workq.BrokerUnavailable)):
            p.publish(q, b"during")
        assert time.monotonic() - start < PUBLISH + MARGIN
        proxy.restore()
        p.publish(q, b"after")  # the same driver recovers by itself
        assert broker.stats(q).ready >= 2
    finally:
        proxy.restore()
        assert timed(broker.close) < CLOSE_BOUND


def test_reconnect_into_a_peer_that_never_handshakes(proxy: FaultProxy) -> None:
    """The connection drops, then the network swallows everything: the reconnect reaches a
    peer that accepts TCP but never speaks AMQP. Calls fail within their bounds (the I/O
    thread does not die of the handshake timeout), and work again once it is back."""
    q = unique()
    broker = workq.connect(proxied(proxy))
    try:
        broker.declare(q)
        p = broker.producer()
        p.publish(q, b"before")
        proxy.drop()
        proxy.black_hole()
        for call in (lambda: p.publish(q, b"during"), lambda: broker.stats(q)):
            start = time.monotonic()
            with pytest.raises((workq.PublishError, workq.BrokerUnavailable)):
                call()
            assert time.monotonic() - start < CONNECT + PUBLISH + MARGIN
        proxy.restore()
        p.publish(q, b"after")
        assert broker.stats(q).ready == 2
    finally:
        proxy.restore()
        broker.close()


def test_close_on_a_black_holed_network_returns_within_seconds(proxy: FaultProxy) -> None:
    broker = workq.connect(proxied(proxy))
    q = unique()
    broker.declare(q)
    with broker.consumer(q) as c:
        assert c.get(timeout=0.1) is None
        proxy.black_hole()
        assert timed(broker.close) < CLOSE_BOUND


def test_aio_calls_keep_their_bounds_and_recover(proxy: FaultProxy) -> None:
    q = unique()
    url = proxied(proxy)

    async def scenario() -> None:
        proxy.black_hole()
        start = time.monotonic()
        with pytest.raises(workq.BrokerUnavailable, match="connect_timeout"):
            await workq.aio.connect(url)
        assert time.monotonic() - start < CONNECT + MARGIN
        proxy.restore()
        broker = await workq.aio.connect(url)
        try:
            await broker.declare(q)
            p = broker.producer()
            await p.publish(q, b"before")
            for fault in ("stall", "black_hole"):
                getattr(proxy, fault)()
                start = time.monotonic()
                with pytest.raises((workq.PublishError, workq.BrokerUnavailable)):
                    await p.publish(q, b"during")
                assert time.monotonic() - start < PUBLISH + MARGIN
                proxy.restore()
                await p.publish(q, b"after")
            proxy.drop()
            proxy.black_hole()
            start = time.monotonic()
            with pytest.raises((workq.PublishError, workq.BrokerUnavailable)):
                await p.publish(q, b"during")
            assert time.monotonic() - start < PUBLISH + MARGIN
            proxy.restore()
            await p.publish(q, b"after")
            assert (await broker.stats(q)).ready >= 3
            proxy.black_hole()
        finally:
            start = time.monotonic()
            await broker.close()
            assert time.monotonic() - start < CLOSE_BOUND
            proxy.restore()

    asyncio.run(scenario())


def test_aio_producer_and_consumer_ride_out_a_dropped_broker(proxy: FaultProxy) -> None:
    """The broker vanishes (connections reset, new ones refused) for a few seconds under
    a running producer and consumer on one aio broker: every publish either raises or
    is confirmed, every confirmed message is consumed, and both recover by themselves."""
    q = unique()
    url = proxied(proxy)
    total = 150

    async def scenario() -> tuple[set[str], set[str]]:
        confirmed: set[str] = set()
        consumed: set[str] = set()
        stop = asyncio.Event()
        warm = asyncio.Event()
        all_in = asyncio.Event()
        async with await workq.aio.connect(url) as broker:
            await broker.declare(q)

            async def produce() -> None:
                p = broker.producer()
                sent = 0
                while sent < total:
                    mid = f"m{sent}"
                    try:
                        await p.publish(q, mid.encode(), message_id=mid)
                        confirmed.add(mid)
                        sent += 1
                        if sent >= 30:
                            warm.set()
                    except (workq.PublishError, workq.BrokerUnavailable):
                        await asyncio.sleep(0.1)  # raised, not lost: publish it again
                    await asyncio.sleep(0.01)  # pace the stream so the fault lands mid-way
                if confirmed <= consumed:
                    all_in.set()  # the consumer was quicker than the last confirm

            async def consume() -> None:
                while not stop.is_set():
                    try:
                        async with broker.consumer(q, prefetch=10) as c:
                            while not stop.is_set():
                                d = await c.get(timeout=0.5)
                                if d is not None:
                                    consumed.add(d.id)
                                    await d.ack()
                                    if len(confirmed) == total and confirmed <= consumed:
                                        all_in.set()
                    except workq.WorkqError:
                        await asyncio.sleep(0.2)  # broker gone: open the consumer again

            consumer = asyncio.create_task(consume())
            producer = asyncio.create_task(produce())
            await asyncio.wait_for(warm.wait(), 60)
            proxy.drop()
            await asyncio.sleep(2)  # the outage
            proxy.restore()
            await asyncio.wait_for(producer, 120)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), 60)
            stop.set()
            await asyncio.wait_for(consumer, 30)
        return confirmed, consumed

    confirmed, consumed = asyncio.run(scenario())
    assert len(confirmed) == total
    assert confirmed - consumed == set()
