"""Kafka peers: raw confluent-kafka and aiokafka, FastStream on either, at acks=all.

Consumers commit after processing (at-least-once), the durability a work queue needs.
The head-of-line path queues 200 fast messages behind one 2 s message on one partition:
a consumer that handles a partition in order waits out the slow one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import BODY, Ctx, NotApplicable, fresh

FAST = 200
SLOW = 2.0
GROUP = {"session.timeout.ms": 6000, "auto.offset.reset": "earliest"}


def bootstrap(ctx: Ctx) -> str:
    from workq.backends.kafka.settings import KafkaSettings

    return ",".join(KafkaSettings.from_url(ctx.url).bootstrap_servers)


def topic(ctx: Ctx, partitions: int = 1) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = fresh("kt")
    admin = AdminClient({"bootstrap.servers": bootstrap(ctx)})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()
    return name


def _fill(ctx: Ctx, name: str, bodies: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap(ctx), "acks": "all"})
    for body in bodies:
        producer.produce(name, body)
    producer.flush(30)


def warm_up(producer: Any, name: str) -> None:
    """One untimed message: a new librdkafka producer's first delivery waits for the
    client's start-up (connection, idempotent producer id; about 0.5 s on Kafka 4),
    which workq's producer has done by the time it is timed (it starts at connect)."""
    producer.produce(name, BODY)
    producer.flush(30)


def confluent_peer(path: str, ctx: Ctx) -> float:
    from confluent_kafka import Consumer, Producer

    name = topic(ctx)
    if path.startswith("publish"):
        producer = Producer(
            {"bootstrap.servers": bootstrap(ctx), "acks": "all", "enable.idempotence": True}
        )
        n = ctx.n_single if path == "publish_single" else ctx.n
        warm_up(producer, name)
        start = time.perf_counter()
        for _ in range(n):
            producer.produce(name, BODY)
            if path == "publish_single":
                producer.flush(30)  # wait for this message's delivery report
        producer.flush(30)
        return n / (time.perf_counter() - start)
    if path in ("consume", "head_of_line"):
        bodies = [BODY] * ctx.n if path == "consume" else [b"slow"] + [b"fast"] * FAST
        _fill(ctx, name, bodies)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap(ctx),
                "group.id": fresh("g"),
                **GROUP,
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([name])
        want = len(bodies) if path == "consume" else FAST
        got = 0
        start = None
        try:
            while got < want:
                batch = consumer.consume(500, timeout=1.0)
                if batch and start is None:
                    start = time.perf_counter()  # from the first message, group join excluded
                for m in batch:
                    if m.error():
                        continue
                    if m.value() == b"slow":
                        time.sleep(SLOW)
                    elif path == "consume" or m.value() == b"fast":
                        got += 1
                if batch:
                    consumer.commit(asynchronous=False)
            assert start is not None
            elapsed = time.perf_counter() - start
        finally:
            consumer.close()
        return want / elapsed if path == "consume" else elapsed
    raise NotApplicable(path)


def aiokafka_peer(path: str, ctx: Ctx) -> float:
    if path not in ("publish_single", "publish_batch", "consume", "head_of_line"):
        raise NotApplicable(path)
    return asyncio.run(_aiokafka(path, ctx))


async def _aiokafka(path: str, ctx: Ctx) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    name = topic(ctx)
    if path.startswith("publish"):
        # acks=all; no idempotence: Tansu answers aiokafka's InitProducerId with an error.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(ctx), acks="all")
        await producer.start()
        try:
            n = ctx.n_single if path == "publish_single" else ctx.n
            await producer.send_and_wait(name, BODY)  # untimed, as the others' start-up
            start = time.perf_counter()
            if path == "publish_single":
                for _ in range(n):
                    await producer.send_and_wait(name, BODY)
            else:
                futures = [await producer.send(name, BODY) for _ in range(n)]
                await asyncio.gather(*futures)
            return n / (time.perf_counter() - start)
        finally:
            await producer.stop()
    bodies = [BODY] * ctx.n if path == "consume" else [b"slow"] + [b"fast"] * FAST
    _fill(ctx, name, bodies)
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=bootstrap(ctx),
        group_id=fresh("g"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    await consumer.start()
    want = len(bodies) if path == "consume" else FAST
    got = 0
    start = time.perf_counter() if path == "head_of_line" else None
    try:
        while got < want:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                if start is None:
                    start = time.perf_counter()
                for r in records:
                    if r.value == b"slow":
                        await asyncio.sleep(SLOW)
                    elif path == "consume" or r.value == b"fast":
                        got += 1
            if batches:
                await consumer.commit()
        assert start is not None
        elapsed = time.perf_counter() - start
    finally:
        await consumer.stop()
    return want / elapsed if path == "consume" else elapsed


def faststream_peer(flavour: str) -> Any:
    def peer(path: str, ctx: Ctx) -> float:
        if path not in ("publish_single", "publish_batch", "consume", "head_of_line"):
            raise NotApplicable(path)
        return asyncio.run(_faststream(flavour, path, ctx))

    return peer


async def _faststream(flavour: str, path: str, ctx: Ctx) -> float:
    from faststream import AckPolicy

    if flavour == "aiokafka":
        from faststream.kafka import KafkaBroker
    else:
        from faststream.confluent import KafkaBroker  # type: ignore[assignment]

    name = topic(ctx)
    # Idempotence only on confluent: Tansu answers aiokafka's InitProducerId with an error.
    broker = KafkaBroker(
        bootstrap(ctx), acks="all", enable_idempotence=flavour == "confluent", logger=None
    )
    consuming = not path.startswith("publish")
    bodies = [BODY] * ctx.n if path == "consume" else [b"slow"] + [b"fast"] * FAST
    want = len(bodies) if path == "consume" else FAST
    state = {"got": 0, "start": 0.0, "end": 0.0}
    finished = asyncio.Event()
    if consuming:
        _fill(ctx, name, bodies)

        @broker.subscriber(
            name,
            group_id=fresh("g"),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,  # commit after the handler returns
        )
        async def handle(body: bytes) -> None:
            if not state["start"]:
                state["start"] = time.perf_counter()
            if body == b"slow":
                await asyncio.sleep(SLOW)
            elif path == "consume" or body == b"fast":
                state["got"] += 1
                if state["got"] == want:
                    state["end"] = time.perf_counter()
                    finished.set()

    await broker.start() if consuming else await broker.connect()
    try:
        if not consuming:
            # Untimed: the client's start-up (see warm_up) is not publishing speed.
            await broker.publish(BODY, name)
        if path == "publish_single":
            start = time.perf_counter()
            for _ in range(ctx.n_single):
                await broker.publish(BODY, name)
            return ctx.n_single / (time.perf_counter() - start)
        if path == "publish_batch":
            start = time.perf_counter()
            # 50 a call: FastStream's aiokafka batch buffer overflows at about 51 of these.
            for first in range(0, ctx.n, 50):
                await broker.publish_batch(*([BODY] * min(50, ctx.n - first)), topic=name)
            return ctx.n / (time.perf_counter() - start)
        await asyncio.wait_for(finished.wait(), 120)
        elapsed = state["end"] - state["start"]
        return want / elapsed if path == "consume" else elapsed
    finally:
        await broker.stop()


PEERS = {
    "confluent-kafka": confluent_peer,
    "aiokafka": aiokafka_peer,
    "faststream-aiokafka": faststream_peer("aiokafka"),
    "faststream-confluent": faststream_peer("confluent"),
}
PATHS = ["publish_single", "publish_batch", "consume", "head_of_line"]
NOTES = {
    "head_of_line": "raw clients and FastStream handle a partition in order (their default)",
    "aiokafka": "acks=all without idempotence (Tansu rejects aiokafka's InitProducerId)",
}
