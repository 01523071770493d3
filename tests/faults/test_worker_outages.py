"""A worker left running through a broker outage: everything published before, during and
after it is processed, and the worker is still running (and connected) afterwards.

SQS goes away behind a fault proxy while the messages of the outage are published
through a second broker that reaches the endpoint directly; Apache Kafka is a single node
stopped and started again under the worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from tests.sqs.test_outages import BOUNDS, _port
from workq.testing.brokers import NotAvailable
from workq.testing.brokers.kafka import KafkaCluster, running_cluster
from workq.testing.brokers.sqs import url_for
from workq.testing.conformance import WAIT, unique, until, with_query
from workq.testing.faults import FaultProxy
from workq.testing.plugin import in_ci

#: After the broker is back the worker may still sit in a reconnect backoff (up to 10 s).
RECOVERY = WAIT * 2


class Handled:
    """The ids a worker's handler saw, from its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: set[str] = set()

    def __call__(self, delivery: workq.Delivery) -> None:
        with self._lock:
            self.ids.add(delivery.id)

    def has(self, ids: list[str]) -> bool:
        with self._lock:
            return set(ids) <= self.ids


class Running:
    """A worker's ``run()`` on a thread; stops it (and checks it ended) on exit."""

    def __init__(self, worker: workq.Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the worker did not stop"

    def alive(self) -> bool:
        """Still in ``run()``, which no outage may end."""
        return self.thread.is_alive() and self.error is None


# -- SQS ------------------------------------------------------------------------------------


@pytest.fixture
def sqs_proxy(sqs_url: str) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", _port(sqs_url)) as p:
        yield p


@pytest.mark.sqs
@pytest.mark.slow
def test_an_sqs_worker_rides_out_an_unreachable_endpoint(
    sqs_url: str, sqs_proxy: FaultProxy
) -> None:
    queue = unique("wo")
    handled = Handled()
    proxied = with_query(url_for(f"http://127.0.0.1:{sqs_proxy.port}"), BOUNDS)
    with workq.connect(sqs_url) as direct, workq.connect(proxied) as through_proxy:
        # A short lease, so a delivery whose ack was lost to the outage comes back soon.
        direct.declare(queue, lease=5.0)
        producer = direct.producer()
        confirmed = [producer.publish(queue, f"before {i}") for i in range(5)]
        worker = through_proxy.worker(queue, handled, concurrency=2, shutdown_timeout=5.0)
        with Running(worker) as running:
            until(lambda: handled.has(confirmed), what="the messages before the outage")
            until(lambda: worker.connected, what="the worker to be connected")

            sqs_proxy.drop()
            until(lambda: not worker.connected, what="the worker to see the reset connections")
            confirmed += [producer.publish(queue, f"during drop {i}") for i in range(5)]
            sqs_proxy.black_hole()
            confirmed += [producer.publish(queue, f"during black hole {i}") for i in range(5)]
            assert running.alive(), running.error

            sqs_proxy.restore()
            until(lambda: worker.connected, RECOVERY, what="the worker to reconnect")
            confirmed += [producer.publish(queue, f"after {i}") for i in range(5)]
            until(lambda: handled.has(confirmed), RECOVERY, what="every confirmed message")
            assert running.alive(), running.error
            assert worker.connected
    assert len(set(confirmed)) == 20


# -- Kafka ----------------------------------------------------------------------------------


@pytest.fixture
def kafka_node(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A one-node Apache Kafka cluster of this test's own, so that it can be restarted."""
    if os.environ.get("WORKQ_TEST_KAFKA", "apache").lower() == "tansu":
        pytest.skip("WORKQ_TEST_KAFKA=tansu: restarting a node needs Apache Kafka")
    try:
        with running_cluster(tmp_path / "kafka", size=1) as cluster:
            yield cluster
    except NotAvailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.mark.kafka
@pytest.mark.slow
def test_a_kafka_worker_rides_out_a_broker_restart(kafka_node: KafkaCluster) -> None:
    queue = unique("wo")
    handled = Handled()
    # A short publish bound, so that attempts while the broker is down fail quickly.
    publisher_url = with_query(kafka_node.url, "publish_timeout=3")
    with workq.connect(publisher_url) as publisher, workq.connect(kafka_node.url) as consumer:
        publisher.declare(queue)
        producer = publisher.producer()
        confirmed = [producer.publish(queue, f"before {i}") for i in range(5)]
        worker = consumer.worker(queue, handled, concurrency=2, shutdown_timeout=5.0)
        with Running(worker) as running:
            until(lambda: handled.has(confirmed), RECOVERY, what="the messages before the stop")
            until(lambda: worker.connected, what="the worker to be connected")

            node = kafka_node.nodes[0]
            node.stop()
            until(lambda: not worker.connected, RECOVERY, what="the worker to see the stop")
            failed: list[str] = []
            for i in range(3):
                body = f"during {i}"
                try:
                    confirmed.append(producer.publish(queue, body))
                except workq.PublishError:
                    failed.append(body)
            assert failed, "a publish to a stopped broker was confirmed"
            assert running.alive(), running.error

            kafka_node.restart(node.node_id)

            def republish() -> bool:
                while failed:
                    try:
                        confirmed.append(producer.publish(queue, failed[0]))
                    except workq.PublishError:
                        return False
                    failed.pop(0)
                return True

            until(republish, RECOVERY, what="the failed publishes to succeed after the restart")
            until(lambda: worker.connected, RECOVERY, what="the worker to reconnect")
            confirmed += [producer.publish(queue, f"after {i}") for i in range(5)]
            until(lambda: handled.has(confirmed), RECOVERY, what="every confirmed message")
            assert running.alive(), running.error
            assert worker.connected
    assert len(set(confirmed)) == 13
