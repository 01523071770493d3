"""Kafka-specific semantics and faults, against a real broker (Apache Kafka by default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import QUIET, WAIT, unique, until, with_query

pytestmark = pytest.mark.kafka

CHILD = Path(__file__).with_name("consumer_child.py")


@pytest.fixture
def broker(kafka_url: str) -> Iterator[workq.Broker]:
    with workq.connect(kafka_url) as broker:
        yield broker


@pytest.fixture
def queue() -> str:
    return unique("k")


def consume_into(
    broker: workq.Broker, queue: str, acked: list[str], stop: threading.Event, prefetch: int = 10
) -> threading.Thread:
    """A consumer thread acking everything into ``acked`` until ``stop``."""

    def run() -> None:
        with broker.consumer(queue, prefetch=prefetch) as c:
            while not stop.is_set():
                d = c.get(timeout=0.2)
                if d is not None:
                    stop.wait(0.01)  # a little work, so the stream is still going
                    d.ack()
                    acked.append(d.id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_slow_message_does_not_delay_the_200_behind_it(broker: workq.Broker, queue: str) -> None:
    broker.declare(queue, partitions=1)
    ids = broker.producer().publish_many(queue, ["slow", *(f"fast{i}" for i in range(200))])
    slow_done = threading.Event()
    fast: list[str] = []
    fast_done_while_slow_ran = threading.Event()

    def handle(d: workq.Delivery) -> None:
        if d.text() == "slow":
            slow_done.wait(10.0)  # the slow message's work: 10 s unless the test ends it
            slow_done.set()
            return
        fast.append(d.id)
        if len(fast) == 200 and not slow_done.is_set():
            fast_done_while_slow_ran.set()

    worker = broker.worker(queue, handle, concurrency=4, prefetch=50)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        until(lambda: len(fast) == 200 or slow_done.is_set(), what="the fast messages")
        assert fast_done_while_slow_ran.is_set(), f"{len(fast)} fast done when the slow one ended"
        assert set(fast) == set(ids[1:])
    finally:
        slow_done.set()
        worker.stop()
        thread.join(WAIT)
    # Everything was acked, the slow one last: the commit covers the whole partition.
    with broker.consumer(queue) as c:
        assert c.get(timeout=QUIET) is None


@pytest.mark.slow
def test_sigkilled_consumer_loses_nothing(
    broker: workq.Broker, queue: str, kafka_url: str, tmp_path: Path
) -> None:
    broker.declare(queue, partitions=3)
    ids = set(broker.producer().publish_many(queue, [str(i) for i in range(300)]))
    child_file = tmp_path / "child-acked.txt"
    child_file.touch()
    child = subprocess.Popen(
        [sys.executable, str(CHILD), kafka_url, queue, str(child_file)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    survivor: list[str] = []
    stop = threading.Event()
    thread: threading.Thread | None = None
    try:
        until(lambda: len(child_file.read_text().split()) >= 20, what="the child to consume")
        thread = consume_into(broker, queue, survivor, stop)
        until(lambda: len(child_file.read_text().split()) >= 60, what="the child mid-stream")
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
        killed_at = set(child_file.read_text().split())
        assert len(killed_at) < len(ids), "the child finished before it was killed"
        until(
            lambda: ids <= killed_at | set(survivor),
            timeout=60,
            what="every message acked by the child or the survivor",
        )
    finally:
        stop.set()
        if child.poll() is None:
            child.kill()
        if thread is not None:
            thread.join(WAIT)
    assert ids - set(survivor) <= killed_at


@pytest.mark.slow
def test_second_consumer_joining_loses_nothing_and_duplicates_only_in_flight(
    broker: workq.Broker, queue: str
) -> None:
    broker.declare(queue, partitions=4)
    ids = broker.producer().publish_many(queue, [str(i) for i in range(400)])
    first: list[str] = []
    second: list[str] = []
    stop = threading.Event()
    threads = [consume_into(broker, queue, first, stop, prefetch=10)]
    try:
        until(lambda: len(first) >= 50, what="the first consumer mid-stream")
        threads.append(consume_into(broker, queue, second, stop, prefetch=10))
        until(lambda: set(ids) <= set(first) | set(second), timeout=60, what="all acked")
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    counts = Counter(first + second)
    duplicates = [i for i, n in counts.items() if n > 1]
    # Only what the first consumer held unsettled at the hand-over can come twice:
    # at most its prefetch (its in-flight bound).
    assert len(duplicates) <= 10, duplicates
    assert set(counts) == set(ids)


@pytest.mark.slow
def test_handler_longer_than_max_poll_interval_keeps_its_partitions(
    kafka_url: str, queue: str
) -> None:
    with workq.connect(with_query(kafka_url, "max_poll_interval_ms=7000")) as broker:
        broker.declare(queue, partitions=1)
        broker.producer().publish_many(queue, ["long", "next"])
        with broker.consumer(queue, prefetch=2) as c:
            d = c.get(timeout=WAIT)
            assert d is not None and d.text() == "long"
            receiver = c._receiver
            part = receiver._parts[d._item.token.part]  # type: ignore[attr-defined]
            # The handler's work outlasts max.poll.interval.ms (7 s): wait 10 s.
            threading.Event().wait(10.0)
            assert receiver._parts.get(part.key) is part, "the partition was taken away"  # type: ignore[attr-defined]
            d.ack()
            nxt = c.get(timeout=WAIT)
            assert nxt is not None and nxt.text() == "next"
            nxt.ack()
        # Its commits were accepted: a new consumer finds nothing left.
        with broker.consumer(queue) as c:
            assert c.get(timeout=QUIET) is None


def test_ordering_key_keeps_per_key_order(broker: workq.Broker, queue: str) -> None:
    broker.declare(queue, partitions=1, ordering="key")
    with broker.producer() as p:
        p.publish(queue, "k1-first", headers={"key": "k1"})
        p.publish(queue, "k1-second", headers={"key": "k1"})
        p.publish(queue, "k2-first", headers={"key": "k2"})
    with broker.consumer(queue, prefetch=3) as c:
        a = c.get(timeout=WAIT)
        b = c.get(timeout=WAIT)
        assert a is not None and b is not None
        assert {a.text(), b.text()} == {"k1-first", "k2-first"}
        assert c.get(timeout=QUIET) is None, "k1-second must wait for k1-first"
        (a if a.text() == "k1-first" else b).ack()
        third = c.get(timeout=WAIT)
        assert third is not None and third.text() == "k1-second"
        for d in (a if a.text() == "k2-first" else b, third):
            d.ack()


def test_unknown_and_bad_queue_options_are_named(broker: workq.Broker, queue: str) -> None:
    with pytest.raises(workq.ConfigurationError, match="colour"):
        broker.declare(queue, colour="blue")
    with pytest.raises(workq.ConfigurationError, match="ordering"):
        broker.declare(queue, ordering="total")
    with pytest.raises(workq.ConfigurationError, match="partitions"):
        broker.declare(queue, partitions=0)


def test_unreachable_broker_raises_broker_unavailable() -> None:
    from workq.testing.brokers import free_port

    with pytest.raises(workq.BrokerUnavailable, match="cannot reach Kafka"):
        workq.connect(f"kafka://127.0.0.1:{free_port()}?connect_timeout=1")


def test_stats_counts_ready_per_lane_and_dead_letters(broker: workq.Broker, queue: str) -> None:
    broker.declare(queue, partitions=2)
    with broker.producer() as p:
        # One publish per message: Tansu's end offsets count produced batches.
        p.publish(queue, "a")
        p.publish(queue, "b")
        p.publish(queue, "t", tenant="acme")
        p.publish(queue, "urgent", priority=5)
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None and d.text() == "urgent"
        d.reject(reason="bad")
    stats = broker.stats(queue)
    ready = {(s.lane.tenant, s.lane.priority): s.ready for s in stats.lanes}
    assert ready == {(None, 0): 2, ("acme", 0): 1, (None, 5): 0}
    assert stats.dead_letters == 1


def test_pausing_and_resuming_partitions_loses_and_repeats_nothing(
    kafka_url: str, queue: str
) -> None:
    # A read-ahead of 5 makes the poll thread pause and resume the partitions many
    # times; each resume seeks back to where fetching stopped.
    with workq.connect(with_query(kafka_url, "buffer=5")) as broker:
        broker.declare(queue, partitions=2)
        sent = broker.producer().publish_many(queue, [f"m{i}" for i in range(300)])
        got: list[str] = []
        with broker.consumer(queue, prefetch=5) as c:
            receiver = c._receiver
            flows: list[int] = []
            apply_flow = receiver._apply_flow  # type: ignore[attr-defined]

            def counting(pause: list[object], resume: list[object]) -> None:
                flows.append(len(resume))
                apply_flow(pause, resume)

            receiver._apply_flow = counting  # type: ignore[attr-defined]
            while len(got) < len(sent):
                d = c.get(timeout=WAIT)
                assert d is not None, f"stalled after {len(got)} of {len(sent)}"
                got.append(d.id)
                d.ack()
            assert c.get(timeout=QUIET) is None
        assert sum(flows) > 0, "the partitions were never paused and resumed"
        assert sorted(got) == sorted(sent)


def test_a_lane_filling_the_read_ahead_does_not_hide_new_messages_of_quiet_lanes(
    kafka_url: str, queue: str
) -> None:
    # A read-ahead of 10 is filled by the noisy lane's backlog, which pauses its
    # partition; the quiet lanes have nothing buffered, so theirs keep fetching and a
    # message published to them now is in view of the tenant turns at once.
    quiet = [f"quiet{i}" for i in range(5)]
    with workq.connect(with_query(kafka_url, "buffer=10")) as broker:
        broker.declare(queue, partitions=1)
        producer = broker.producer()
        producer.publish_many(queue, [workq.Message("lane", tenant=t) for t in quiet])
        producer.publish_many(queue, [workq.Message("n", tenant="noisy") for _ in range(200)])
        with broker.consumer(queue, prefetch=5) as c:
            receiver = c._receiver
            lane_messages = 0
            while lane_messages < len(quiet):
                d = c.get(timeout=WAIT)
                assert d is not None, "the lane-making messages did not come"
                lane_messages += d.body == b"lane"
                d.ack()
            parts = receiver._parts  # type: ignore[attr-defined]
            until(
                lambda: any(p.paused for p in list(parts.values()) if p.lane.tenant == "noisy"),
                what="the noisy lane's partition to pause",
            )
            producer.publish_many(queue, [workq.Message("q", tenant=t) for t in quiet])
            until(
                lambda: (
                    sum(len(p.buffer) for p in list(parts.values()) if p.lane.tenant in quiet)
                    == len(quiet)
                ),
                what="the quiet lanes' new messages to be fetched beside the paused backlog",
            )
            order: list[str | None] = []
            while len([t for t in order if t != "noisy"]) < len(quiet):
                d = c.get(timeout=WAIT)
                assert d is not None, f"stalled after {order}"
                order.append(d.tenant)
                d.ack()
        # What the consumer already held (prefetch), then one noisy turn per quiet one.
        assert order.count("noisy") <= len(quiet) + 5, order


@pytest.mark.parametrize("protocol", ["classic", "consumer", "auto"])
def test_a_running_consumer_finds_a_new_tenants_lane(
    kafka_url: str, queue: str, protocol: str
) -> None:
    """Lane discovery with ``tenants=None`` under each group protocol.

    The consumer is running (it has served a lane already) when the new tenant's first
    message makes a new topic; ``consumer`` (KIP-848) needs a broker offering it, which
    Tansu is not, so there ``auto`` falls back to ``classic``.
    """
    tansu = os.environ.get("WORKQ_TEST_KAFKA", "").lower() == "tansu"
    if protocol == "consumer" and tansu:
        pytest.skip("Tansu has no KIP-848 consumer group protocol")
    with workq.connect(with_query(kafka_url, f"group_protocol={protocol}")) as broker:
        p = broker.producer()
        p.publish(queue, "early", tenant="early")
        with broker.consumer(queue) as c:
            first = c.get(timeout=WAIT)
            assert first is not None and first.body == b"early"
            first.ack()
            expected = "classic" if protocol == "classic" or tansu else "consumer"
            assert broker.driver.groups.protocol() == expected  # type: ignore[attr-defined]
            p.publish(queue, "late", tenant=unique("late"))
            d = c.get(timeout=WAIT)
            assert d is not None and d.body == b"late", "the new tenant's lane was not found"
            d.ack()


def test_queues_consumed_one_after_another_on_one_connection_all_get_their_messages(
    kafka_url: str,
) -> None:
    """Each queue a connection consumes adds its lane-signal topic to the connection's one
    lane watch; the second used to hang in opening (a call on the watch's client from
    the opening thread while the watch's thread polled it)."""
    with workq.connect(kafka_url) as broker:
        for round_ in range(3):
            queue = unique(f"seq{round_}")
            broker.declare(queue)
            broker.producer().publish(queue, f"hello {round_}")
            got: list[str] = []

            def consume(q: str = queue, got: list[str] = got) -> None:
                with broker.consumer(q) as c:
                    d = until(lambda: c.get(timeout=1.0), what="the message")
                    got.append(d.text())
                    d.ack()

            thread = threading.Thread(target=consume, daemon=True)
            thread.start()
            until(lambda g=got: bool(g), timeout=WAIT * 2, what=f"queue {round_}'s message")
            thread.join(WAIT)
            assert got == [f"hello {round_}"]
            watch = broker.driver._watch  # type: ignore[attr-defined]
            assert watch is not None and watch.watching(queue)


def test_idle_lanes_are_not_fetched_until_a_producers_work_note_wakes_them(
    kafka_url: str, queue: str
) -> None:
    """``lane_idle``: a lane's partitions at their end with nothing new stop being
    fetched; a workq producer's work note (``<queue>.lanes``) resumes them at once. The
    sweep is an hour away here, so only the note can wake the lane: a plain client's
    record written while the lane sleeps stays unfetched until the note comes."""
    from confluent_kafka import Producer

    from workq.backends.kafka.topics import Naming
    from workq.lanes import Lane

    url = with_query(kafka_url, "lane_idle=2&lane_idle_sweep=3600")
    topic = Naming("workq").lane_topic(Lane(queue, tenant="a"))
    with workq.connect(url) as broker:
        broker.declare(queue)
        producer = broker.producer()
        producer.publish(queue, "first", tenant="a")
        with broker.consumer(queue) as c:
            first = until(lambda: c.get(timeout=0.5), what="the first message")
            first.ack()
            parts = c._receiver._parts  # type: ignore[attr-defined]
            lane_parts = lambda: [p for p in list(parts.values()) if p.key[0] == topic]  # noqa: E731
            until(
                lambda: lane_parts() and all(p.asleep for p in lane_parts()),
                what="the idle lane's partitions to sleep",
            )
            plain = Producer({"bootstrap.servers": kafka_url.split("//", 1)[1]})
            plain.produce(topic, b"plain", partition=lane_parts()[0].key[1])
            assert plain.flush(WAIT) == 0
            # Asleep means not fetched: the plain record (no note) is not delivered.
            assert c.get(timeout=QUIET) is None
            assert all(p.asleep for p in lane_parts())
            producer.publish(queue, "noted", tenant="a")
            got = set()
            while len(got) < 2:
                d = until(lambda: c.get(timeout=0.5), what=f"the lane woken by the note ({got})")
                got.add(d.body)
                d.ack()
            assert got == {b"plain", b"noted"}


def test_sleeping_partitions_taken_away_and_given_back_are_fetched_again(
    kafka_url: str, queue: str
) -> None:
    """librdkafka keeps a partition's pause across a revoke and a later assignment back to
    the same consumer: partitions that slept as idle, went to a second consumer and came
    back when it left must be fetched again (they were not: their messages stayed put)."""
    url = with_query(kafka_url, "lane_idle=2&lane_idle_sweep=3600")
    with workq.connect(url) as first, workq.connect(url) as second:
        first.declare(queue, partitions=4)
        producer = first.producer()
        producer.publish(queue, "first")
        with first.consumer(queue) as a:
            until(lambda: a.get(timeout=0.5), what="the first message").ack()
            parts = a._receiver._parts  # type: ignore[attr-defined]
            until(
                lambda: len(parts) == 4 and all(p.asleep for p in list(parts.values())),
                what="all four partitions to sleep",
            )
            with second.consumer(queue) as b:
                until(
                    lambda: b.get(timeout=0.2) is None and len(parts) < 4,
                    timeout=WAIT * 2,
                    what="the second consumer to take some partitions",
                )
            until(lambda: len(parts) == 4, timeout=WAIT * 2, what="the partitions to come back")
            sent = {f"k{i}" for i in range(16)}
            for key in sorted(sent):
                producer.publish(queue, key, key=key)
            got: set[str] = set()
            while got != sent:
                d = until(lambda: a.get(timeout=0.5), what=f"the rest of {sorted(sent - got)}")
                got.add(d.text())
                d.ack()
