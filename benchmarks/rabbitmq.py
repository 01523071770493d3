"""workq on RabbitMQ against the raw clients, on the same broker in one run.

Pairs: workq (sync) vs pika, and workq.aio vs aio-pika; each measures publish with
publisher confirms and consume with prefetch 100 and an ack per message.

    python benchmarks/rabbitmq.py [--n N]

The broker is ``WORKQ_BENCH_RABBITMQ_URL`` (or ``WORKQ_TEST_RABBITMQ_URL``) if set,
else a node started for the run by workq's test launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pika

import workq

BODY = b"x" * 200
WINDOW = 1000
BATCH = 1000
PREFETCH = 100


@contextlib.contextmanager
def broker_url() -> Iterator[str]:
    url = os.environ.get("WORKQ_BENCH_RABBITMQ_URL") or os.environ.get("WORKQ_TEST_RABBITMQ_URL")
    if url:
        yield url
        return
    from workq.testing.brokers.rabbitmq import start_local

    with tempfile.TemporaryDirectory() as tmp:
        proc = start_local(Path(tmp))
        try:
            yield proc.url
        finally:
            proc.stop()


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def fresh_queue(url: str) -> str:
    """A quorum queue made the way workq makes it, so both sides use the same kind."""
    name = f"bench{uuid.uuid4().hex[:10]}"
    with workq.connect(url) as broker:
        broker.declare(name)
    return name


# -- raw pika: async confirms with a window (SelectConnection), blocking consume -------


def pika_publish(url: str, queue: str, n: int) -> None:
    state = {"sent": 0, "confirmed": 0, "nacked": 0}
    conn: Any = None
    channel: Any = None

    def send() -> None:
        while state["sent"] < n and state["sent"] - state["confirmed"] < WINDOW:
            channel.basic_publish("", queue, BODY, pika.BasicProperties(delivery_mode=2))
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        done = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if isinstance(method, pika.spec.Basic.Nack):
            state["nacked"] += done - state["confirmed"]
        state["confirmed"] = max(state["confirmed"], done)
        if state["confirmed"] >= n:
            conn.close()
        else:
            send()

    def on_channel(ch: Any) -> None:
        nonlocal channel
        channel = ch
        ch.confirm_delivery(on_confirm, callback=lambda _frame: send())

    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda *_: conn.ioloop.stop(),
    )
    conn.ioloop.start()
    assert state["confirmed"] >= n and not state["nacked"], state


def pika_consume(url: str, queue: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=PREFETCH)
    for count, (method, _props, _body) in enumerate(ch.consume(queue), 1):
        ch.basic_ack(method.delivery_tag)
        if count >= n:
            break
    ch.cancel()
    conn.close()


def workq_publish(url: str, queue: str, n: int) -> None:
    with workq.connect(url) as broker, broker.producer() as p:
        for i in range(0, n, BATCH):
            p.publish_many(queue, [BODY] * min(BATCH, n - i))


def workq_consume(url: str, queue: str, n: int) -> None:
    with workq.connect(url) as broker, broker.consumer(queue, prefetch=PREFETCH) as c:
        count = 0
        while count < n:
            d = c.get(timeout=10)
            assert d is not None, f"workq consumer stalled after {count}"
            d.ack()
            count += 1


# -- aio ---------------------------------------------------------------------------------


async def aio_pika_publish(url: str, queue: str, n: int) -> None:
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        for i in range(0, n, BATCH):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(
                        aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        queue,
                    )
                    for _ in range(min(BATCH, n - i))
                )
            )


async def aio_pika_consume(url: str, queue: str, n: int) -> None:
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=PREFETCH)
        q = await ch.get_queue(queue, ensure=False)
        count = 0
        async with q.iterator() as it:
            async for message in it:
                await message.ack()
                count += 1
                if count >= n:
                    break


async def workq_aio_publish(url: str, queue: str, n: int) -> None:
    async with await workq.aio.connect(url) as broker, broker.producer() as p:
        for i in range(0, n, BATCH):
            await p.publish_many(queue, [BODY] * min(BATCH, n - i))


async def workq_aio_consume(url: str, queue: str, n: int) -> None:
    async with (
        await workq.aio.connect(url) as broker,
        broker.consumer(queue, prefetch=PREFETCH) as c,
    ):
        count = 0
        while count < n:
            d = await c.get(timeout=10)
            assert d is not None, f"workq.aio consumer stalled after {count}"
            await d.ack()
            count += 1


def run(url: str, n: int) -> dict[str, float]:
    results: dict[str, float] = {}
    q1, q2 = fresh_queue(url), fresh_queue(url)
    results["pika publish"] = rate(n, lambda: pika_publish(url, q1, n))
    results["workq publish"] = rate(n, lambda: workq_publish(url, q2, n))
    results["pika consume"] = rate(n, lambda: pika_consume(url, q1, n))
    results["workq consume"] = rate(n, lambda: workq_consume(url, q2, n))
    q3, q4 = fresh_queue(url), fresh_queue(url)
    results["aio-pika publish"] = rate(n, lambda: asyncio.run(aio_pika_publish(url, q3, n)))
    results["workq.aio publish"] = rate(n, lambda: asyncio.run(workq_aio_publish(url, q4, n)))
    results["aio-pika consume"] = rate(n, lambda: asyncio.run(aio_pika_consume(url, q3, n)))
    results["workq.aio consume"] = rate(n, lambda: asyncio.run(workq_aio_consume(url, q4, n)))
    return results


PAIRS = [
    ("workq publish", "pika publish"),
    ("workq consume", "pika consume"),
    ("workq.aio publish", "aio-pika publish"),
    ("workq.aio consume", "aio-pika consume"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per measurement")
    args = parser.parse_args()
    with broker_url() as url:
        results = run(url, args.n)
    print(f"RabbitMQ, {args.n} messages of {len(BODY)} bytes, persistent, quorum queues")
    for name, value in results.items():
        print(f"  {name:<20} {value:>10,.0f} msg/s")
    print("ratios (workq / raw client; target >= 0.8):")
    for ours, raw in PAIRS:
        print(f"  {ours:<20} / {raw:<18} = {results[ours] / results[raw]:.2f}x")


if __name__ == "__main__":
    main()
