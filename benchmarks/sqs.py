"""workq on SQS against raw batched boto3, on the same server in one run.

    python benchmarks/sqs.py [--n N | --quick] [--url sqs://REGION?endpoint_url=...]

    python benchmarks/sqs.py --tenants 1,10,100,1000 [--idle 20]

The URL comes from --url, else WORKQ_BENCH_SQS_URL or WORKQ_TEST_SQS_URL, else a moto
server is started for the run. ``--tenants`` measures instead one idle consumer of
every tenant (``tenants=None``) of a queue with T tenant lanes: SQS requests per second
over ``--idle`` seconds after a warm-up, and the latency of one message published into
a quiet tenant's lane (3 samples). For publish, and for consume + ack, of N messages it
prints msg/s of both sides, the ratio workq / raw, and SQS API requests per message
(counted with botocore's ``before-call`` event; the floor with batches of 10 is 0.1 per
phase, 0.3 in all). moto slows down as queues get deep, so figures are for comparison
within one run, not absolute.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

import workq
from workq.backends.sqs.driver import SQSDriver
from workq.lanes import Lane

CHUNK = 100


def counter(client: Any) -> Counter[str]:
    counts: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    client.meta.events.register("before-call.sqs.*", hook)
    return counts


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_workq(url: str, n: int) -> dict[str, tuple[float, float]]:
    queue = f"bench{uuid.uuid4().hex[:12]}"
    with workq.connect(url) as broker:
        assert isinstance(broker.driver, SQSDriver)
        broker.declare(queue)
        # Every request of every client the driver makes (long polls have their own).
        counts = broker.driver.sqs.requests
        counts.clear()
        bodies = [f"message {i}" for i in range(n)]

        def publish() -> None:
            with broker.producer() as p:
                for start in range(0, n, CHUNK):
                    p.publish_many(queue, bodies[start : start + CHUNK])

        t_pub = timed(publish)
        pub_requests = sum(counts.values())
        counts.clear()

        def consume() -> None:
            with broker.consumer(queue, prefetch=100) as c:
                done = 0
                while done < n:
                    d = c.get(timeout=5.0)
                    if d is None:
                        raise RuntimeError(f"workq consumed {done} of {n}")
                    d.ack()
                    done += 1

        t_con = timed(consume)
        con_requests = sum(counts.values())
    return {
        "publish": (n / t_pub, pub_requests / n),
        "consume+ack": (n / t_con, con_requests / n),
    }


def run_raw(url: str, n: int) -> dict[str, tuple[float, float]]:
    parts = urlsplit(url)
    endpoint = parse_qs(parts.query).get("endpoint_url", [None])[0]
    client = boto3.client("sqs", region_name=parts.netloc or None, endpoint_url=endpoint)
    queue_url = client.create_queue(QueueName=f"raw{uuid.uuid4().hex[:12]}")["QueueUrl"]
    counts = counter(client)
    bodies = [f"message {i}" for i in range(n)]

    def publish() -> None:
        for start in range(0, n, 10):
            entries = [
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(bodies[start : start + 10])
            ]
            resp = client.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
            if resp.get("Failed"):
                raise RuntimeError(resp["Failed"])

    t_pub = timed(publish)
    pub_requests = sum(counts.values())
    counts.clear()

    def consume() -> None:
        done = 0
        while done < n:
            got = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if got:
                client.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )
                done += len(got)

    t_con = timed(consume)
    con_requests = sum(counts.values())
    client.delete_queue(QueueUrl=queue_url)
    return {
        "publish": (n / t_pub, pub_requests / n),
        "consume+ack": (n / t_con, con_requests / n),
    }


def requests_of(driver: SQSDriver) -> Counter[str]:
    """The driver's request counter (every client it has)."""
    counts: Counter[str] = driver.sqs.requests
    counts.clear()
    return counts


def run_tenants(url: str, tenants: int, idle: float) -> tuple[float, list[float]]:
    """(idle requests/s, quiet-tenant latencies in s) for one consumer of T lanes."""
    queue = f"ten{uuid.uuid4().hex[:10]}"
    with workq.connect(url) as broker, workq.connect(url) as other:
        driver = broker.driver
        assert isinstance(driver, SQSDriver)
        spec = broker.declare(queue)
        for t in range(tenants):
            driver.lane_url(spec, Lane(queue, f"t{t}", 0), create=True)
        with broker.consumer(queue, tenants=None) as c:
            warm = time.monotonic() + 10.0
            while time.monotonic() < warm:
                c.get(timeout=1.0)
            counts = requests_of(driver)
            start = time.perf_counter()
            while time.perf_counter() - start < idle:
                c.get(timeout=1.0)
            rate = sum(counts.values()) / (time.perf_counter() - start)
            latencies = []
            for sample in range(3):
                tenant = f"t{(tenants // 2 + sample) % tenants}"
                sent = time.perf_counter()
                other.producer().publish(queue, "hello", tenant=tenant)
                while True:
                    d = c.get(timeout=1.0)
                    if d is not None:
                        latencies.append(time.perf_counter() - sent)
                        d.ack()
                        break
                    if time.perf_counter() - sent > 120:
                        latencies.append(float("inf"))
                        break
    return rate, latencies


def report(
    n: int, ours: dict[str, tuple[float, float]], raw: dict[str, tuple[float, float]]
) -> None:
    print(f"SQS benchmark, N={n} messages")
    head = ("phase", "workq msg/s", "boto3 msg/s", "ratio", "workq req/msg", "boto3 req/msg")
    print(f"{head[0]:<12} {head[1]:>12} {head[2]:>12} {head[3]:>7} {head[4]:>14} {head[5]:>14}")
    total_ours = total_raw = 0.0
    for phase in ours:
        (w_rate, w_req), (r_rate, r_req) = ours[phase], raw[phase]
        total_ours += w_req
        total_raw += r_req
        ratio = w_rate / r_rate
        rates = f"{w_rate:>12.0f} {r_rate:>12.0f} {ratio:>6.2f}x"
        print(f"{phase:<12} {rates} {w_req:>14.3f} {r_req:>14.3f}")
    print(f"{'all':<12} {'':>12} {'':>12} {'':>7} {total_ours:>14.3f} {total_raw:>14.3f}")
    print("kombu's SQS transport: not run (kombu is not a dependency of workq)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="messages per phase (default 300)")
    parser.add_argument("--quick", action="store_true", help="a small run (N=50), for CI")
    parser.add_argument("--url", default=None, help="sqs:// URL; default: env, else a moto server")
    parser.add_argument("--tenants", default="", help="idle cost at these tenant counts: 1,10")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle per count")
    args = parser.parse_args()
    if args.quick:
        args.n = 50
    url = args.url or os.environ.get("WORKQ_BENCH_SQS_URL") or os.environ.get("WORKQ_TEST_SQS_URL")
    proc = None
    if url is None:
        from workq.testing.brokers.sqs import start_local

        proc = start_local(Path(tempfile.mkdtemp(prefix="workq-bench-sqs-")))
        url = proc.url
    try:
        if args.tenants:
            print("SQS idle consumer of T tenant lanes (tenants=None)")
            print(f"{'T':>5} {'requests/s':>11} {'quiet-tenant latency (s)':>26}")
            for count in (int(x) for x in args.tenants.split(",")):
                rate, lat = run_tenants(url, count, args.idle)
                print(f"{count:>5} {rate:>11.2f} {' '.join(f'{x:.2f}' for x in lat):>26}")
            return
        # Each side uses its own fresh queue, so neither sees the other's backlog.
        raw = run_raw(url, args.n)
        ours = run_workq(url, args.n)
        report(args.n, ours, raw)
    finally:
        if proc is not None:
            proc.stop()


if __name__ == "__main__":
    main()
