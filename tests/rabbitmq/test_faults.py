"""Fault tests against real RabbitMQ nodes: crashes, restarts, leader loss, bad declarations."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import workq
from workq.testing.brokers.rabbitmq import Cluster, Node, start_cluster, start_local
from workq.testing.conformance import unique, until

pytestmark = pytest.mark.rabbitmq

WAIT = 60.0


def test_conflicting_redeclaration_names_the_argument(rabbitmq_url: str) -> None:
    q = unique()
    with workq.connect(rabbitmq_url) as a, workq.connect(rabbitmq_url) as b:
        a.declare(q, queue_type="classic", max_priority=5)
        with pytest.raises(workq.ConfigurationError, match="x-queue-type"):
            b.declare(q, queue_type="quorum", max_priority=5)
    with (
        workq.connect(rabbitmq_url) as c,
        pytest.raises(workq.ConfigurationError, match="max_priority"),
    ):
        c.declare(q, queue_type="classic", max_priority=7)
    q2 = unique()
    with workq.connect(rabbitmq_url) as a, workq.connect(rabbitmq_url) as b:
        a.declare(q2, max_attempts=3)
        with pytest.raises(workq.ConfigurationError, match="max_attempts"):
            b.declare(q2, max_attempts=4)
        assert b.declare(q2, max_attempts=3).max_attempts == 3


def test_classic_queue_declared_elsewhere_is_adopted_on_first_use(rabbitmq_url: str) -> None:
    # Another process declared a classic queue; this one only uses it by name, so its
    # implicit declaration must adopt the stored spec, not declare quorum defaults.
    q = unique()
    with workq.connect(rabbitmq_url) as a:
        a.declare(q, queue_type="classic", max_priority=5)
        a.producer().publish(q, "hello", priority=3)
    with workq.connect(rabbitmq_url) as b:
        assert b.stats(q).ready == 1
        assert b.spec(q).options["queue_type"] == "classic"
        with b.consumer(q) as c:
            d = c.get(timeout=WAIT)
            assert d is not None and d.text() == "hello" and d.priority == 3
            d.ack()

    async def aio() -> None:
        async with await workq.aio.connect(rabbitmq_url) as b:
            assert (await b.stats(q)).ready == 0
            async with b.producer() as p:
                await p.publish(q, "again")
            async with b.consumer(q) as c:
                d = await c.get(timeout=WAIT)
                assert d is not None and d.text() == "again"
                await d.ack()

    asyncio.run(aio())


def test_unknown_option_is_a_configuration_error(rabbitmq_url: str) -> None:
    with (
        workq.connect(rabbitmq_url) as broker,
        pytest.raises(workq.ConfigurationError, match="partitions"),
    ):
        broker.declare(unique(), partitions=3)


def test_unreachable_broker_raises_broker_unavailable(tmp_path: Path) -> None:
    from workq.testing.brokers import free_port

    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/?reconnect_attempts=2&connect_timeout=1"
    with pytest.raises(workq.BrokerUnavailable, match="cannot connect"):
        workq.connect(url)


HOLDER = """
import sys, workq
broker = workq.connect(sys.argv[1])
c = broker.consumer(sys.argv[2], prefetch=5)
held = [c.get(timeout=30) for _ in range(5)]
assert all(held)
print("held", flush=True)
sys.stdin.read()
"""


def test_killed_consumer_process_messages_are_redelivered(rabbitmq_url: str) -> None:
    q = unique()
    with workq.connect(rabbitmq_url) as broker:
        ids = broker.producer().publish_many(q, [f"m{i}".encode() for i in range(5)])
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, rabbitmq_url, q],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "held"
            with broker.consumer(q, prefetch=5) as c:
                assert c.get(timeout=0.5) is None  # all five are held by the other process
                proc.kill()
                proc.wait(timeout=10)
                got: list[workq.Delivery] = []
                deadline = time.monotonic() + WAIT
                while len(got) < 5 and time.monotonic() < deadline:
                    d = c.get(timeout=1.0)
                    if d is not None:
                        got.append(d)
                        d.ack()
        finally:
            proc.kill()
        assert sorted(d.id for d in got) == sorted(ids)
        assert all(d.attempt == 2 and d.redelivered for d in got)


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[Node]:
    proc = start_local(tmp_path)
    node = proc.info["node"]
    assert isinstance(node, Node)
    try:
        yield node
    finally:
        proc.stop()


class Traffic:
    """A producer and a consumer thread that ride out broker faults, counting what happened."""

    def __init__(self, url: str, queue: str, total: int) -> None:
        self.url, self.queue, self.total = url, queue, total
        self.confirmed: set[str] = set()
        self.failed = 0
        self.consumed: set[str] = set()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._produce, daemon=True),
            threading.Thread(target=self._consume, daemon=True),
        ]

    def start(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def _produce(self) -> None:
        sent = 0
        broker: workq.Broker | None = None
        while sent < self.total and not self.stop.is_set():
            try:
                if broker is None:
                    broker = workq.connect(self.url)
                mid = f"m{sent}"
                broker.producer().publish(self.queue, mid.encode(), message_id=mid)
                self.confirmed.add(mid)
                sent += 1
            except (workq.PublishError, workq.BrokerUnavailable):
                self.failed += 1  # raised, not lost in silence: publish it again
            time.sleep(0.005)  # pace the stream so faults land mid-way
        if broker is not None:
            broker.close()

    def _consume(self) -> None:
        while not self.stop.is_set():
            try:
                with (
                    workq.connect(self.url) as broker,
                    broker.consumer(self.queue, prefetch=10) as c,
                ):
                    while not self.stop.is_set():
                        d = c.get(timeout=0.5)
                        if d is not None:
                            self.consumed.add(d.id)
                            d.ack()
            except (workq.WorkqError, ConnectionError) as exc:
                self.errors.append(repr(exc))
                time.sleep(0.2)  # broker down or recovering: connect again
            except BaseException as exc:
                self.errors.append(f"consumer thread died: {exc!r}")  # fails the test
                raise

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def ride_out(url: str, total: int, fault: Callable[[str], None]) -> str:
    """Stream ``total`` messages through a new queue, calling ``fault(queue)`` mid-way;
    every confirmed message must be consumed. Returns the queue's name."""
    q = unique()
    with workq.connect(url) as broker:
        broker.declare(q)
    traffic = Traffic(url, q, total=total).start()
    try:
        until(lambda: len(traffic.consumed) >= 50, WAIT, "traffic before the fault")
        fault(q)
        until(lambda: len(traffic.confirmed) >= total, WAIT, "the producer to finish")
        deadline = time.monotonic() + WAIT
        while not traffic.confirmed <= traffic.consumed and time.monotonic() < deadline:
            time.sleep(0.1)  # polling, bounded by WAIT
    finally:
        traffic.join()
    missing = traffic.confirmed - traffic.consumed
    if missing:
        # Tell a stalled consumer (the messages are still there) from a loss.
        with workq.connect(url) as broker, broker.consumer(q, prefetch=50) as c:
            end = time.monotonic() + WAIT
            while missing and time.monotonic() < end:
                d = c.get(timeout=1.0)
                if d is not None:
                    missing.discard(d.id)
                    d.ack()
        pytest.fail(
            f"{len(traffic.confirmed - traffic.consumed)} confirmed message(s) were not "
            f"consumed within {WAIT}s; {len(missing)} of them are not in the queue either "
            f"(lost). Consumer errors: {traffic.errors[-5:]}"
        )
    return q


def test_node_restart_mid_stream_loses_no_confirmed_message(own_node: Node) -> None:
    def restart(_queue: str) -> None:
        # A clean restart: on RabbitMQ 3.10 a single node killed hard can leave quorum
        # queues unable to serve basic.get (the cluster test covers hard kills).
        own_node.stop()
        own_node.start()

    ride_out(own_node.url + "?reconnect_attempts=8", 300, restart)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path, 3)
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.slow
def test_cluster_leader_killed_while_publishing_and_consuming(cluster: Cluster) -> None:
    killed: list[Node] = []

    def kill_leader(queue: str) -> None:
        out = cluster.nodes[0].ctl("list_queues", "-q", "--no-table-headers", "name", "leader")
        leaders = dict(line.split()[:2] for line in out.splitlines() if line.strip())
        leader = next(n for n in cluster.nodes if n.nodename == leaders[queue])
        leader.kill()
        killed.append(leader)

    q = ride_out(cluster.url + "?reconnect_attempts=8", 400, kill_leader)
    survivor = next(n for n in cluster.nodes if n not in killed)
    names = survivor.ctl("list_queues", "-q", "--no-table-headers", "name")
    assert q in names.split()  # the queue did not vanish with its node


def test_aio_driver_reconnects_after_a_node_restart(own_node: Node) -> None:
    q = unique()
    url = own_node.url + "?reconnect_attempts=8"

    async def scenario() -> set[str]:
        async with await workq.aio.connect(url) as broker:
            p = broker.producer()
            first = await p.publish_many(q, [f"a{i}".encode() for i in range(50)])
            own_node.stop()
            own_node.start()
            second = await p.publish_many(q, [f"b{i}".encode() for i in range(50)])
            want = set(first) | set(second)
            got: set[str] = set()
            async with broker.consumer(q, prefetch=20) as c:
                deadline = time.monotonic() + WAIT
                while got != want and time.monotonic() < deadline:
                    d = await c.get(timeout=1.0)
                    if d is not None:
                        got.add(d.id)
                        await d.ack()
            return want - got

    assert asyncio.run(scenario()) == set()


def test_nacked_publishes_raise_publish_error_and_the_rest_are_there(own_node: Node) -> None:
    """A full ``reject-publish`` queue nacks: ``publish_many`` (sent in pipelined parts)
    raises ``PublishError`` counting what was not confirmed, and everything else is in
    the queue. Classic queues, which enforce the cap exactly (quorum queues overshoot)."""
    cap = 150
    sync_q, aio_q = unique("cap"), unique("cap")
    for q in (sync_q, aio_q):
        own_node.ctl(
            "set_policy",
            f"cap-{q}",
            f"^{q}$",
            f'{{"max-length": {cap}, "overflow": "reject-publish"}}',
            "--apply-to",
            "queues",
        )
    url = own_node.url + "?publish_retries=2"
    unconfirmed = re.compile(r"(\d+) of 400 message\(s\) .*nacked by the broker")

    def depth(broker: workq.Broker, q: str) -> int:
        return sum(lane.ready for lane in broker.stats(q).lanes)

    with workq.connect(url) as broker, broker.producer() as p:
        broker.declare(sync_q, queue_type="classic")
        with pytest.raises(workq.PublishError) as caught:
            p.publish_many(sync_q, [b"x"] * 400)
        match = unconfirmed.search(str(caught.value))
        assert match is not None and int(match.group(1)) == 400 - cap, caught.value
        with pytest.raises(workq.PublishError, match="nacked"):
            p.publish(sync_q, b"one more")
        until(lambda: depth(broker, sync_q) == cap, WAIT, "the capped queue to fill")

    async def aio() -> None:
        async with await workq.aio.connect(url) as abroker, abroker.producer() as p:
            await abroker.declare(aio_q, queue_type="classic")
            with pytest.raises(workq.PublishError) as caught:
                await p.publish_many(aio_q, [b"x"] * 400)
            assert re.search(rf"\b{400 - cap} of 400 message", str(caught.value)), caught.value

    asyncio.run(aio())
    with workq.connect(url) as broker:
        for q in (sync_q, aio_q):
            broker.declare(q, queue_type="classic")
        until(lambda: depth(broker, aio_q) == cap, WAIT, "the capped queue to fill")
        with broker.consumer(sync_q, prefetch=50) as c:
            got = 0
            while (d := c.get(timeout=2)) is not None:
                d.ack()
                got += 1
        assert got == cap
