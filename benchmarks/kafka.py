"""Kafka benchmark: workq against the raw confluent-kafka client, same broker, one run.

    python benchmarks/kafka.py [--n N] [--slow SECONDS]

Uses the broker in ``WORKQ_BENCH_KAFKA_URL`` (or ``WORKQ_TEST_KAFKA_URL``) if set, else
starts a Tansu broker with the test launcher. Prints msg/s and workq/raw ratios for
produce and consume+ack, and the p99 latency of fast messages queued behind one slow
message, workq's worker against a plain sequential consumer.

Consume is compared like for like: a raw confluent consumer that processes each message
(reads its value and headers) and commits after processing (at-least-once), against
workq's consume+ack. The raw batch loop that reads nothing stays as the physical
ceiling, labelled as such. The CPU line splits workq's per-message cost between the poll
thread and the handler thread. The fairness line runs the skewed-jobs workload in
``mode=group`` and ``mode=share`` against greedy scheduling. FastStream is not compared
here: it is not a dependency of the project (see issue 16's peer benchmark).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

import workq
from workq.backends.kafka.settings import KafkaSettings
from workq.testing.conformance import with_query

BODY = b"x" * 100


def bootstrap(url: str) -> str:
    return ",".join(KafkaSettings.from_url(url).bootstrap_servers)


def raw_topic(url: str, partitions: int) -> str:
    topic = f"raw-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap(url)})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    return topic


def raw_consumer(url: str, topic: str) -> Consumer:
    """A raw consumer of ``topic`` in a fresh group, from the start, committing by hand."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap(url),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    return consumer


def raw_produce(url: str, topic: str, n: int, batch: int) -> float:
    """Seconds for a raw idempotent acks=all producer to get n delivery reports."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap(url),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
        }
    )
    start = time.perf_counter()
    for first in range(0, n, batch):
        for _ in range(min(batch, n - first)):
            producer.produce(topic, BODY)
        producer.flush()
    return time.perf_counter() - start


def workq_produce(broker: workq.Broker, queue: str, n: int, batch: int) -> float:
    with broker.producer() as p:
        start = time.perf_counter()
        for first in range(0, n, batch):
            p.publish_many(queue, [BODY] * min(batch, n - first))
        return time.perf_counter() - start


def raw_consume(url: str, topic: str, n: int) -> float:
    """Seconds from the first message to n consumed, committing offsets manually."""
    consumer = raw_consumer(url, topic)
    got = 0
    start = None
    while got < n:
        messages = consumer.consume(500, 1.0)
        if not messages:
            continue
        start = start or time.perf_counter()
        last: dict[int, TopicPartition] = {}
        for m in messages:
            if m.error() is None:
                got += 1
                last[m.partition() or 0] = TopicPartition(
                    topic, m.partition() or 0, (m.offset() or 0) + 1
                )
        consumer.commit(offsets=list(last.values()), asynchronous=True)
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return elapsed


def raw_consume_at_least_once(url: str, topic: str, n: int) -> float:
    """Like for like with workq: each message is processed (its value and headers read,
    as workq decodes them), and offsets are committed only after processing."""
    consumer = raw_consumer(url, topic)
    got = 0
    start = None
    seen = 0
    while got < n:
        messages = consumer.consume(500, 1.0)
        if not messages:
            continue
        start = start or time.perf_counter()
        last: dict[int, TopicPartition] = {}
        for m in messages:
            if m.error() is None:
                seen += len(m.value() or b"") + len(m.headers() or [])  # the "processing"
                got += 1
                last[m.partition() or 0] = TopicPartition(
                    topic, m.partition() or 0, (m.offset() or 0) + 1
                )
        consumer.commit(offsets=list(last.values()), asynchronous=True)
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return elapsed


def thread_cpu(name_prefix: str) -> float:
    """CPU seconds used so far by the live thread whose name starts with ``name_prefix``."""
    for thread in threading.enumerate():
        if thread.name.startswith(name_prefix) and thread.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().split()
            except OSError:
                return 0.0
            ticks = os.sysconf("SC_CLK_TCK")
            # utime and stime, after the parenthesised command name.
            rest = fields[fields.index(next(f for f in fields if f.endswith(")"))) + 1 :]
            return (int(rest[11]) + int(rest[12])) / ticks
    return 0.0


def workq_consume(broker: workq.Broker, queue: str, n: int) -> tuple[float, float, float]:
    """Seconds to consume+ack n, and CPU seconds of the poll thread and the handler."""
    with broker.consumer(queue, prefetch=500) as c:
        got = 0
        start = None
        poll_cpu = handler_cpu = 0.0
        while got < n:
            d = c.get(timeout=1.0)
            if d is None:
                continue
            if start is None:
                start = time.perf_counter()
                poll_cpu = thread_cpu("workq-kafka-poll")
                handler_cpu = time.thread_time()
            d.ack()
            got += 1
        elapsed = time.perf_counter() - (start or time.perf_counter())
        return (
            elapsed,
            thread_cpu("workq-kafka-poll") - poll_cpu,
            time.thread_time() - handler_cpu,
        )


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def workq_head_of_line(
    broker: workq.Broker, queue: str, fast: int, slow: float, join_wait: float
) -> float:
    """p99 seconds from publish to handled, for fast messages behind one slow one."""
    broker.declare(queue, partitions=1)
    latencies: list[float] = []
    finished = threading.Event()

    def handle(d: workq.Delivery) -> None:
        if d.text() == "slow":
            finished.wait(slow)
            return
        latencies.append(time.time() - d.enqueued_at.timestamp())
        if len(latencies) == fast:
            finished.set()

    worker = broker.worker(queue, handle, concurrency=4, prefetch=100)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    worker.wait_running()
    time.sleep(join_wait)  # let the group join first, so latency is not join time
    broker.producer().publish_many(queue, ["slow", *(["fast"] * fast)])
    finished.wait(slow + 60)
    worker.stop()
    thread.join(60)
    return p99(latencies)


def raw_head_of_line(url: str, fast: int, slow: float, join_wait: float) -> float:
    """The same with a plain sequential consumer: each message handled in turn."""
    topic = raw_topic(url, 1)
    consumer = raw_consumer(url, topic)
    joined = time.monotonic() + join_wait
    while time.monotonic() < joined:
        consumer.poll(0.1)
    producer = Producer({"bootstrap.servers": bootstrap(url), "acks": "all"})
    sent = time.time()
    producer.produce(topic, b"slow")
    for _ in range(fast):
        producer.produce(topic, b"fast")
    producer.flush()
    latencies: list[float] = []
    while len(latencies) < fast:
        m = consumer.poll(1.0)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):  # type: ignore[union-attr]
            continue
        if m.value() == b"slow":
            time.sleep(slow)
        else:
            latencies.append(time.time() - sent)
        consumer.commit(message=m, asynchronous=True)
    consumer.close()
    return p99(latencies)


def greedy_makespan(jobs: list[float], workers: int) -> float:
    """Makespan of handing each job, in order, to the next free worker."""
    free = [0.0] * workers
    for job in jobs:
        free.sort()
        free[0] += job
    return max(free)


def fairness(url: str, jobs: list[float], workers: int, join_wait: float) -> float:
    """Seconds from publish to the last of ``jobs`` done, by ``workers`` workers of one job
    at a time (concurrency 1, prefetch 1), each on its own connection.

    Warm-up jobs run first, until every worker has handled one (or ``join_wait`` more
    seconds passed), so the makespan measures dispatch, not group joins.
    """
    queue = f"fair{uuid.uuid4().hex[:12]}"
    done = threading.Event()
    lock = threading.Lock()
    count = [0]
    warmed: set[int] = set()

    def handler(index: int) -> Callable[[workq.Delivery], None]:
        def handle(d: workq.Delivery) -> None:
            if d.headers.get("warm-up"):
                time.sleep(0.1)
                with lock:
                    warmed.add(index)
                return
            time.sleep(float(d.text()))
            with lock:
                count[0] += 1
                if count[0] == len(jobs):
                    done.set()

        return handle

    brokers = [workq.connect(url) for _ in range(workers)]
    # Group mode gets a partition per worker (its best case); share mode needs one.
    share = "mode=share" in url
    brokers[0].declare(queue, max_priority=0, partitions=1 if share else workers)
    running = []
    for index, broker in enumerate(brokers):
        worker = broker.worker(queue, handler(index), concurrency=1, prefetch=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        worker.wait_running()
        running.append((worker, thread))
    producer = brokers[0].producer()
    deadline = time.monotonic() + 20
    while len(warmed) < workers and time.monotonic() < deadline:
        producer.publish_many(
            queue,
            # Keyed, so that in group mode they spread over every partition.
            [
                workq.Message("0", headers={"warm-up": "1", "key": f"w{i}"})
                for i in range(workers * 4)
            ],
        )
        time.sleep(max(join_wait, 0.5))
    start = time.perf_counter()
    producer.publish_many(queue, [repr(j) for j in jobs])
    done.wait(sum(jobs) + 120)
    elapsed = time.perf_counter() - start
    for worker, _ in running:
        worker.stop()
    for (_, thread), broker in zip(running, brokers, strict=True):
        thread.join(60)
        broker.close()
    return elapsed


def with_broker(run: Callable[[str], None]) -> None:
    url = os.environ.get("WORKQ_BENCH_KAFKA_URL") or os.environ.get("WORKQ_TEST_KAFKA_URL")
    if url:
        run(url)
        return
    from workq.testing.brokers.kafka import start_local

    proc = start_local(Path(tempfile.mkdtemp(prefix="workq-bench-kafka-")))
    try:
        run(proc.url)
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="messages per throughput run")
    parser.add_argument("--batch", type=int, default=500, help="messages per publish call")
    parser.add_argument("--fast", type=int, default=200, help="fast messages behind the slow one")
    parser.add_argument("--slow", type=float, default=3.0, help="seconds the slow message takes")
    parser.add_argument(
        "--join-wait", type=float, default=4.0, help="seconds allowed for a group join"
    )
    parser.add_argument(
        "--skewed",
        default="54x0.05,6x1.5",
        help="fairness workload: COUNTxSECONDS,... of jobs, shuffled ('' to skip)",
    )
    parser.add_argument("--workers", type=int, default=4, help="workers of the fairness run")
    args = parser.parse_args()

    def run(url: str) -> None:
        print(f"broker: {url}  n={args.n}  batch={args.batch}")
        with workq.connect(url) as broker:
            queue = f"bench{uuid.uuid4().hex[:12]}"
            broker.declare(queue, partitions=3, max_priority=0)
            topic = raw_topic(url, 3)
            raw_p = raw_produce(url, topic, args.n, args.batch)
            wq_p = workq_produce(broker, queue, args.n, args.batch)
            print(
                f"produce   raw {args.n / raw_p:10.0f} msg/s   workq {args.n / wq_p:10.0f} msg/s"
                f"   ratio {raw_p / wq_p:.2f}x"
            )
            raw_c = raw_consume(url, topic, args.n)
            raw_alo = raw_consume_at_least_once(url, topic, args.n)
            wq_c, poll_cpu, handler_cpu = workq_consume(broker, queue, args.n)
            print(
                f"consume   raw at-least-once {args.n / raw_alo:10.0f} msg/s   "
                f"workq {args.n / wq_c:10.0f} msg/s   ratio {raw_alo / wq_c:.2f}x"
                f"   ({raw_alo / args.n * 1e6:.1f} vs {wq_c / args.n * 1e6:.1f} us/msg)"
            )
            print(
                f"ceiling   raw batch loop, processes nothing {args.n / raw_c:10.0f} msg/s"
                f"   ({raw_c / args.n * 1e6:.1f} us/msg; workq at {raw_c / wq_c:.2f}x of it)"
            )
            print(
                f"cpu/msg   workq poll thread {poll_cpu / args.n * 1e6:.1f} us   "
                f"handler thread {handler_cpu / args.n * 1e6:.1f} us"
            )
            raw_h = raw_head_of_line(url, args.fast, args.slow, args.join_wait)
            wq_h = workq_head_of_line(
                broker, f"hol{uuid.uuid4().hex[:12]}", args.fast, args.slow, args.join_wait
            )
            print(
                f"head-of-line p99 (slow={args.slow}s, {args.fast} fast)   sequential {raw_h:.3f} s"
                f"   workq {wq_h:.3f} s   ratio {raw_h / wq_h:.1f}x"
            )
        if args.skewed:
            jobs = [
                float(seconds)
                for part in args.skewed.split(",")
                for count, seconds in [part.split("x")]
                for _ in range(int(count))
            ]
            random.Random(7).shuffle(jobs)
            greedy = greedy_makespan(jobs, args.workers)
            share = with_query(url, "mode=share")
            group_s = fairness(url, jobs, args.workers, args.join_wait)
            share_s = fairness(share, jobs, args.workers, args.join_wait)
            print(
                f"fairness makespan ({len(jobs)} jobs, {args.workers} workers)   greedy "
                f"{greedy:.2f} s   mode=group {group_s:.2f} s ({group_s / greedy:.2f}x)   "
                f"mode=share {share_s:.2f} s ({share_s / greedy:.2f}x)"
            )

    with_broker(run)


if __name__ == "__main__":
    main()
