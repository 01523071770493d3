"""workq itself, sync and ``workq.aio``: the same code on every broker, chosen by URL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import workq

from .common import BODY, Countdown, Ctx, NotApplicable, fresh, rate, seconds, skewed_jobs

CHUNK = 100
SLOW = 2.0
FAST = 200


def _fill(broker: workq.Broker, queue: str, bodies: list[bytes]) -> None:
    with broker.producer() as p:
        for start in range(0, len(bodies), CHUNK):
            p.publish_many(queue, bodies[start : start + CHUNK])


def workq_sync(path: str, ctx: Ctx) -> float:
    queue = fresh("wq")
    lease = 2.0 if path == "long_handler" else None
    with workq.connect(ctx.url) as broker:
        if lease is not None:
            broker.declare(queue, lease=lease)
        else:
            broker.declare(queue)
        if path == "publish_single":
            with broker.producer() as p:
                p.publish(queue, BODY)  # untimed, as every peer's first message

                def single() -> None:
                    for _ in range(ctx.n_single):
                        p.publish(queue, BODY)

                return rate(ctx.n_single, single)
        if path == "publish_batch":
            with broker.producer() as p:
                p.publish(queue, BODY)  # untimed, as every peer's first message
                # One call, as a user hands workq a batch (it splits by the broker's limits).
                return rate(ctx.n, lambda: p.publish_many(queue, [BODY] * ctx.n))
        if path in ("consume_p1", "consume_p100", "consume"):
            prefetch = 1 if path == "consume_p1" else 100
            _fill(broker, queue, [BODY] * ctx.n)
            with broker.consumer(queue, prefetch=prefetch) as c:

                def drain(n: int, timeout: float) -> None:
                    for _ in range(n):
                        d = c.get(timeout=timeout)
                        if d is None:
                            raise TimeoutError(f"workq consumer got nothing for {timeout} s")
                        d.ack()

                # Timed from the first delivery: a Kafka group join is not consume speed.
                drain(1, 30.0)
                return rate(ctx.n - 1, lambda: drain(ctx.n - 1, 10.0))
        if path == "skewed":
            jobs = skewed_jobs()
            _fill(broker, queue, [str(j).encode() for j in jobs])
            return _run_worker(broker, queue, len(jobs), lambda d: time.sleep(float(d.body)))
        if path == "head_of_line":
            _fill(broker, queue, [b"slow"] + [b"fast"] * FAST)

            def handle(d: workq.Delivery) -> None:
                if d.body == b"slow":
                    time.sleep(SLOW)

            return _run_worker(broker, queue, FAST + 1, handle, until_fast=FAST)
        if path == "long_handler":
            runs: Counter[str] = Counter()
            _fill(broker, queue, [f"job{i}".encode() for i in range(4)])

            def slow(d: workq.Delivery) -> None:
                runs[d.text()] += 1
                time.sleep(5.0)

            _run_worker(broker, queue, 4, slow, linger=4.0)
            return sum(runs.values()) / 4
        if path == "api_calls":
            return sqs_calls_per_message(ctx, broker, queue)
    raise NotApplicable(path)


def _run_worker(
    broker: workq.Broker,
    queue: str,
    n: int,
    handle: object,
    until_fast: int | None = None,
    linger: float = 0.0,
) -> float:
    """Seconds for a 4-thread worker to handle ``n`` (or ``until_fast`` fast) messages."""
    target = until_fast if until_fast is not None else n
    done = Countdown(target)
    first: list[float] = []

    def wrapped(d: workq.Delivery) -> None:
        if not first:
            first.append(time.perf_counter())  # a Kafka group join is not handling time
        handle(d)  # type: ignore[operator]
        if until_fast is None or d.body == b"fast":
            done.hit()

    worker = broker.worker(queue, wrapped, concurrency=4)
    thread = threading.Thread(target=worker.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        done.wait(120, "workq worker")
        elapsed = time.perf_counter() - (first[0] if first else start)
        if linger:
            time.sleep(linger)  # let a lapsed lease show up as a second run
    finally:
        worker.stop()
        thread.join(60)
    return elapsed


def sqs_calls_per_message(ctx: Ctx, broker: workq.Broker, queue: str) -> float:
    counter = ctx.info.get("count_requests")
    if counter is None:
        raise NotApplicable("only counted on SQS")
    from .sqs import server_requests

    before = server_requests(ctx)
    _fill(broker, queue, [BODY] * ctx.n)
    with broker.consumer(queue, prefetch=100) as c:
        for _ in range(ctx.n):
            d = c.get(timeout=10.0)
            if d is None:
                raise TimeoutError("workq consumer got nothing for 10 s")
            d.ack()
    return (server_requests(ctx) - before) / ctx.n


def workq_aio(path: str, ctx: Ctx) -> float:
    if path not in (
        "publish_single",
        "publish_batch",
        "consume_p1",
        "consume_p100",
        "consume",
        "skewed",
    ):
        raise NotApplicable("measured through the sync API only")
    return asyncio.run(_aio(path, ctx))


async def _aio(path: str, ctx: Ctx) -> float:
    queue = fresh("wa")
    async with await workq.aio.connect(ctx.url) as broker:
        await broker.declare(queue)

        async def fill(bodies: list[bytes]) -> None:
            async with broker.producer() as p:
                for start in range(0, len(bodies), CHUNK):
                    await p.publish_many(queue, bodies[start : start + CHUNK])

        start = time.perf_counter()
        if path == "publish_single":
            async with broker.producer() as p:
                await p.publish(queue, BODY)  # untimed, as every peer's first message
                start = time.perf_counter()
                for _ in range(ctx.n_single):
                    await p.publish(queue, BODY)
            return ctx.n_single / (time.perf_counter() - start)
        if path == "publish_batch":
            async with broker.producer() as p:
                await p.publish(queue, BODY)  # untimed, as every peer's first message
                start = time.perf_counter()
                await p.publish_many(queue, [BODY] * ctx.n)
            return ctx.n / (time.perf_counter() - start)
        if path == "skewed":
            jobs = skewed_jobs()
            await fill([str(j).encode() for j in jobs])
            left = len(jobs)
            finished = asyncio.Event()

            async def handle(d: workq.aio.Delivery) -> None:
                nonlocal left
                await asyncio.sleep(float(d.body))
                left -= 1
                if left == 0:
                    finished.set()

            worker = broker.worker(queue, handle, concurrency=4)
            start = time.perf_counter()
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(finished.wait(), 120)
            elapsed = time.perf_counter() - start
            worker.stop()
            await asyncio.wait_for(task, 60)
            return elapsed
        prefetch = 1 if path == "consume_p1" else 100
        await fill([BODY] * ctx.n)
        async with broker.consumer(queue, prefetch=prefetch) as c:
            first = await c.get(timeout=30.0)
            if first is None:
                raise TimeoutError("workq.aio consumer got nothing for 30 s")
            await first.ack()
            start = time.perf_counter()  # from the first delivery, as the sync side
            for _ in range(ctx.n - 1):
                d = await c.get(timeout=10.0)
                if d is None:
                    raise TimeoutError("workq.aio consumer got nothing for 10 s")
                await d.ack()
            return (ctx.n - 1) / (time.perf_counter() - start)


__all__ = ["seconds", "workq_aio", "workq_sync"]
