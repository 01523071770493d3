"""Replication on a 3-broker Apache Kafka cluster: a partition leader dies mid-stream."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from workq.testing.brokers import NotAvailable
from workq.testing.brokers.kafka import KafkaCluster, start_cluster
from workq.testing.conformance import WAIT, unique, until
from workq.testing.plugin import in_ci

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    if os.environ.get("WORKQ_TEST_KAFKA", "apache").lower() == "tansu":
        pytest.skip("WORKQ_TEST_KAFKA=tansu: the cluster test needs Apache Kafka")
    try:
        started = start_cluster(Path(tmp_path_factory.mktemp("kafka-cluster")), size=3)
    except NotAvailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield started
    finally:
        started.stop()


def leader_of(url: str, topic: str) -> int:
    """The node id leading partition 0 of ``topic``."""
    from confluent_kafka.admin import AdminClient

    from workq.backends.kafka.settings import KafkaSettings

    servers = ",".join(KafkaSettings.from_url(url).bootstrap_servers)
    meta = AdminClient({"bootstrap.servers": servers}).list_topics(topic, timeout=WAIT)
    return int(meta.topics[topic].partitions[0].leader)


def test_topics_are_replicated_three_ways_on_a_three_broker_cluster(
    cluster: KafkaCluster,
) -> None:
    from confluent_kafka.admin import AdminClient

    queue = unique("rep")
    with workq.connect(cluster.url) as broker:
        broker.declare(queue, partitions=1)
    servers = ",".join(n.address for n in cluster.nodes)
    admin = AdminClient({"bootstrap.servers": servers})
    topic = queue  # the default lane is the topic named as the queue
    meta = admin.list_topics(topic, timeout=WAIT)
    assert len(meta.topics[topic].partitions[0].replicas) == 3


def test_killing_the_leader_loses_no_confirmed_message(cluster: KafkaCluster) -> None:
    queue = unique("kill")
    confirmed: list[str] = []
    handled: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()
    # Bounded calls, so that publishes during the election fail (and are retried here)
    # rather than wait out the default 30 s.
    url = cluster.url + "?publish_timeout=10&publish_retries=10"

    def handle(d: workq.Delivery) -> None:
        with lock:
            handled.add(d.id)

    with workq.connect(url) as broker:
        broker.declare(queue, partitions=1)
        topic = queue  # the default lane is the topic named as the queue
        worker = broker.worker(queue, handle, concurrency=2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.wait_running()

        def produce() -> None:
            with workq.connect(url) as pub:
                producer = pub.producer()
                i = 0
                while not stop.is_set():
                    try:
                        confirmed.append(producer.publish(queue, f"m{i}"))
                    except workq.PublishError:
                        continue  # not confirmed: not counted
                    i += 1

        producer_thread = threading.Thread(target=produce, daemon=True)
        producer_thread.start()
        # A fresh cluster creates its offsets topic (3 replicas) on the first group join:
        # on a loaded machine that alone takes tens of seconds.
        until(lambda: len(handled) >= 50, timeout=180, what="50 handled before the kill")
        leader = leader_of(cluster.url, topic)
        cluster.node(leader).kill()
        before = len(confirmed)
        until(
            lambda: len(confirmed) >= before + 50,
            timeout=120,
            what="publishing goes on after the kill",
        )
        stop.set()
        producer_thread.join(WAIT)
        until(
            lambda: handled >= set(confirmed),
            timeout=120,
            what="every confirmed message handled after the kill",
        )
        assert thread.is_alive(), "the worker stopped"
        worker.stop()
        thread.join(WAIT)
    assert set(confirmed) <= handled
