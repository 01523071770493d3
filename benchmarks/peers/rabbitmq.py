"""RabbitMQ peers: kombu, Celery, dramatiq, FastStream and taskiq, at workq's durability.

Durability held equal where the library allows: publisher confirms, persistent messages,
quorum queues. dramatiq declares its own classic queues (it has no quorum option), which
the table notes. Each adapter raises ``NotApplicable`` for a path it has no API for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from .common import BODY, Countdown, Ctx, NotApplicable, fresh, rate, seconds, skewed_jobs

QUORUM = {"x-queue-type": "quorum"}


def amqp(ctx: Ctx) -> str:
    return ctx.url.split(",")[0]


# -- kombu -------------------------------------------------------------------------------


def kombu_peer(path: str, ctx: Ctx) -> float:
    from kombu import Connection, Exchange, Queue

    name = fresh("kb")
    queue = Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=QUORUM)
    with Connection(amqp(ctx), transport_options={"confirm_publish": True}) as conn:
        queue(conn.default_channel).declare()
        producer = conn.Producer()

        def publish(n: int, body: bytes = BODY) -> None:
            for _ in range(n):
                producer.publish(
                    body,
                    exchange="",
                    routing_key=name,
                    delivery_mode=2,
                    content_type="application/octet-stream",
                    content_encoding="binary",
                )

        if path == "publish_single":
            return rate(ctx.n_single, lambda: publish(ctx.n_single))
        if path == "publish_batch":
            raise NotApplicable("kombu has no batch publish; each publish waits its confirm")
        if path in ("consume_p1", "consume_p100"):
            publish(ctx.n)
            done = Countdown(ctx.n)

            def on_message(message: Any) -> None:
                message.ack()
                done.hit()

            prefetch = 1 if path == "consume_p1" else 100
            with conn.Consumer(queue, on_message=on_message, prefetch_count=prefetch):

                def drain() -> None:
                    while not done.done.is_set():
                        conn.drain_events(timeout=10)

                return rate(ctx.n, drain)
        if path == "skewed":
            for job in skewed_jobs():
                publish(1, str(job).encode())
            return _kombu_skewed(ctx, queue)
    raise NotApplicable(path)


def _kombu_skewed(ctx: Ctx, queue: Any) -> float:
    from kombu import Connection

    done = Countdown(len(skewed_jobs()))
    stop = threading.Event()

    def consumer() -> None:
        with Connection(amqp(ctx)) as conn:

            def on_message(message: Any) -> None:
                time.sleep(float(message.body))
                message.ack()
                done.hit()

            with conn.Consumer(queue, on_message=on_message, prefetch_count=1):
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)

    threads = [threading.Thread(target=consumer, daemon=True) for _ in range(4)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        done.wait(120, "kombu consumers")
        return time.perf_counter() - start
    finally:
        stop.set()
        for t in threads:
            t.join(10)


# -- Celery ------------------------------------------------------------------------------


def celery_peer(path: str, ctx: Ctx) -> float:
    if path != "publish_single":
        raise NotApplicable("consuming needs a Celery worker process; publish only here")
    from celery import Celery
    from kombu import Exchange, Queue

    name = fresh("cl")
    app = Celery("bench", broker=amqp(ctx))
    app.conf.broker_transport_options = {"confirm_publish": True}
    app.conf.task_queues = [
        Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=QUORUM)
    ]
    app.conf.task_default_delivery_mode = "persistent"
    body = BODY.decode()

    def publish() -> None:
        for _ in range(ctx.n_single):
            app.send_task("bench.job", args=[body], queue=name, routing_key=name)

    try:
        return rate(ctx.n_single, publish)
    finally:
        app.close()


# -- dramatiq ----------------------------------------------------------------------------


def dramatiq_peer(path: str, ctx: Ctx) -> float:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=amqp(ctx), confirm_delivery=True)
    dramatiq.set_broker(broker)
    name = fresh("dq")
    done = Countdown(0)

    @dramatiq.actor(queue_name=name, actor_name=name, broker=broker, max_retries=0)
    def job(body: str) -> None:
        if body != "x":
            time.sleep(float(body))
        done.hit()

    body = BODY.decode()
    try:
        if path == "publish_single":
            return rate(ctx.n_single, lambda: [job.send(body) for _ in range(ctx.n_single)])
        if path == "publish_batch":
            raise NotApplicable("dramatiq has no batch publish (group() sends one by one)")
        if path in ("consume_p1", "consume_p100"):
            for _ in range(ctx.n):
                job.send("x")
            done = Countdown(ctx.n)
            prefetch = 1 if path == "consume_p1" else 100
            return ctx.n / _dramatiq_run(broker, done, threads=1, prefetch=prefetch)
        if path == "skewed":
            jobs = skewed_jobs()
            for j in jobs:
                job.send(str(j))
            done = Countdown(len(jobs))
            # dramatiq's default prefetch: twice the worker threads.
            return _dramatiq_run(broker, done, threads=4, prefetch=8)
    finally:
        broker.close()
    raise NotApplicable(path)


def _dramatiq_run(broker: Any, done: Countdown, threads: int, prefetch: int) -> float:
    import dramatiq

    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.queue_prefetch = prefetch  # what ``dramatiq_queue_prefetch`` sets, per run here
    start = time.perf_counter()
    worker.start()
    try:
        done.wait(120, "dramatiq worker")
        return time.perf_counter() - start
    finally:
        worker.stop()


# -- FastStream --------------------------------------------------------------------------


def faststream_peer(path: str, ctx: Ctx) -> float:
    if path not in ("publish_single", "publish_batch", "consume_p1", "consume_p100"):
        raise NotApplicable("a FastStream RabbitMQ subscriber handles one message at a time")
    return asyncio.run(_faststream(path, ctx))


async def _faststream(path: str, ctx: Ctx) -> float:
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue

    queue = RabbitQueue(fresh("fs"), durable=True, queue_type=QueueType.QUORUM)
    prefetch = 1 if path == "consume_p1" else 100
    broker = RabbitBroker(amqp(ctx), default_channel=Channel(prefetch_count=prefetch), logger=None)
    done = Countdown(ctx.n)
    consuming = path.startswith("consume")
    if consuming:

        @broker.subscriber(queue)
        async def handle(body: bytes) -> None:
            done.hit()

    await broker.connect()
    await broker.declare_queue(queue)
    try:
        if path == "publish_single":
            start = time.perf_counter()
            for _ in range(ctx.n_single):
                await broker.publish(BODY, queue=queue, persist=True)
            return ctx.n_single / (time.perf_counter() - start)
        # Pipelined: 100 publishes in flight, each awaited for its confirm.
        start = time.perf_counter()
        for first in range(0, ctx.n, 100):
            await asyncio.gather(
                *(
                    broker.publish(BODY, queue=queue, persist=True)
                    for _ in range(min(100, ctx.n - first))
                )
            )
        if not consuming:
            return ctx.n / (time.perf_counter() - start)
        start = time.perf_counter()
        await broker.start()
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 120, "faststream")
        return ctx.n / (time.perf_counter() - start)
    finally:
        await broker.stop()


# -- taskiq ------------------------------------------------------------------------------


def taskiq_peer(path: str, ctx: Ctx) -> float:
    if path not in ("publish_single", "publish_batch", "consume_p1", "consume_p100"):
        raise NotApplicable("measured for publish and consume only")
    return asyncio.run(_taskiq(path, ctx))


async def _taskiq(path: str, ctx: Ctx) -> float:
    from taskiq_aio_pika import AioPikaBroker, Queue, QueueType

    name = fresh("tq")
    prefetch = 1 if path == "consume_p1" else 100
    broker = AioPikaBroker(
        amqp(ctx), qos=prefetch, task_queues=[Queue(name=name, type=QueueType.QUORUM)]
    )

    @broker.task(task_name=name)
    async def job(body: str) -> None:
        return None

    body = BODY.decode()
    # Only a worker-process broker opens the channel that ``listen()`` reads from.
    broker.is_worker_process = path.startswith("consume")
    await broker.startup()
    try:
        if path == "publish_single":
            start = time.perf_counter()
            for _ in range(ctx.n_single):
                await job.kiq(body)
            return ctx.n_single / (time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, ctx.n, 100):
            await asyncio.gather(*(job.kiq(body) for _ in range(min(100, ctx.n - first))))
        if path == "publish_batch":
            return ctx.n / (time.perf_counter() - start)
        got = 0
        start = time.perf_counter()
        async for message in broker.listen():
            ack = message.ack
            if ack is not None:
                result = ack()
                if asyncio.iscoroutine(result):
                    await result
            got += 1
            if got == ctx.n:
                break
        return ctx.n / (time.perf_counter() - start)
    finally:
        await broker.shutdown()


PEERS = {
    "kombu": kombu_peer,
    "celery": celery_peer,
    "dramatiq": dramatiq_peer,
    "faststream": faststream_peer,
    "taskiq": taskiq_peer,
}
PATHS = ["publish_single", "publish_batch", "consume_p1", "consume_p100", "skewed"]
NOTES = {"dramatiq": "classic queues (dramatiq declares its own; no quorum option)"}

__all__ = ["NOTES", "PATHS", "PEERS", "seconds"]
