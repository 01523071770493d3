"""Interop with plain Kafka clients (raw confluent_kafka on the other end), on a real broker."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import workq
import workq.aio
from workq.backends.kafka.topics import Naming
from workq.lanes import Lane
from workq.testing.conformance import WAIT, unique, until, with_query

pytestmark = pytest.mark.kafka


def servers(url: str) -> str:
    return urlsplit(url).netloc


@pytest.fixture
def broker(kafka_url: str) -> Iterator[workq.Broker]:
    with workq.connect(kafka_url) as broker:
        yield broker


def plain_consumer(url: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": servers(url),
            "group.id": unique("plain"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def create_topic(url: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": servers(url)})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=WAIT)


def test_lane_topics_are_named_as_the_queue_and_never_confuse_neighbours() -> None:
    naming = Naming("workq")
    assert naming.lane_topic(Lane("orders")) == "orders"
    assert naming.lane_topic(Lane("orders", "acme", 5)) == "orders.p5.acme"
    assert naming.lane_of("orders", "orders") == Lane("orders")
    assert naming.lane_of("orders.p5", "orders") == Lane("orders", None, 5)
    assert naming.lane_of("orders.p0.acme", "orders") == Lane("orders", "acme", 0)
    for stranger in ("orders-eu", "ordersx", "orders.archive", "orders.dlq", "orders.p0", "x"):
        assert naming.lane_of(stranger, "orders") is None, stranger
    old = Naming("workq", suffixed=True)
    assert old.lane_topic(Lane("orders")) == "workq.orders.p0"
    assert old.lane_of("workq.orders.p0", "orders") == Lane("orders")
    assert old.lane_of("orders", "orders") is None
    assert Naming("workq", topic_prefix="dev-").lane_topic(Lane("orders")) == "dev-orders"


def test_plain_producer_reaches_a_workq_consumer_with_key_headers_time_and_id(
    broker: workq.Broker, kafka_url: str
) -> None:
    queue = unique("plainin")
    create_topic(kafka_url, queue, 1)
    producer = Producer({"bootstrap.servers": servers(kafka_url)})
    sent_ms = 1_700_000_000_123
    producer.produce(
        queue,
        value=b'{"n": 1}',
        key=b"customer-7",
        headers=[("trace", b"abc"), ("blob", b"\xff\x00")],
        timestamp=sent_ms,
    )
    producer.produce(queue, value=b"no key")
    assert producer.flush(WAIT) == 0

    with broker.consumer(queue, prefetch=2) as consumer:
        first = until(lambda: consumer.get(timeout=0.5), what="the keyed record")
        second = until(lambda: consumer.get(timeout=0.5), what="the plain record")
        assert first.json() == {"n": 1}
        assert first.headers["key"] == "customer-7"
        assert first.headers["trace"] == "abc"
        assert first.headers["blob"] == "base64:" + base64.b64encode(b"\xff\x00").decode()
        assert first.enqueued_at.timestamp() == sent_ms / 1000
        assert first.id == f"{queue}-0-0"
        assert first.tenant is None
        assert second.id == f"{queue}-0-1"
        assert "key" not in second.headers
        second.ack()
        first.nack()
        again = until(lambda: consumer.get(timeout=0.5), what="the redelivery")
        assert again.id == first.id
        assert again.attempt == 2
        assert again.headers["key"] == "customer-7"
        again.ack()


def test_workq_producer_reaches_a_plain_consumer_of_the_topic_named_as_the_queue(
    broker: workq.Broker, kafka_url: str
) -> None:
    queue = unique("plainout")
    producer = broker.producer()
    keyed = producer.publish(queue, {"n": 1}, headers={"trace": "abc"}, key="customer-7")
    tenant = producer.publish(queue, b"t", tenant="acme")
    plain = plain_consumer(kafka_url, queue)
    try:
        record = until(lambda: plain.poll(0.5), what="workq's record on the topic")
        assert record.error() is None or record.error().code() == KafkaError.NO_ERROR
        assert record.topic() == queue
        assert record.key() == b"customer-7"
        headers = dict(record.headers() or [])
        assert headers["trace"] == b"abc"
        assert headers["x-workq-id"] == keyed.encode()
        assert json.loads(record.value() or b"") == {"n": 1}
    finally:
        plain.close()
    # The tenant's lane is a topic beside it, keyed by the tenant.
    tenants = plain_consumer(kafka_url, f"{queue}.p0.acme")
    try:
        record = until(lambda: tenants.poll(0.5), what="the tenant's record")
        assert record.key() == b"acme"
        assert dict(record.headers() or [])["x-workq-id"] == tenant.encode()
    finally:
        tenants.close()


def test_key_must_be_str_or_bytes_before_any_io(broker: workq.Broker) -> None:
    with pytest.raises(TypeError, match="key=7"):
        broker.producer().publish(unique("badkey"), b"x", key=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key="):
        broker.producer().publish_many(unique("badkey"), [workq.Message(b"x", key=1.5)])  # type: ignore[arg-type]


def test_an_existing_topic_with_five_partitions_is_adopted(
    broker: workq.Broker, kafka_url: str
) -> None:
    queue = unique("adopt")
    create_topic(kafka_url, queue, 5)
    broker.declare(queue)
    admin = AdminClient({"bootstrap.servers": servers(kafka_url)})
    meta = admin.list_topics(queue, timeout=WAIT)
    assert len(meta.topics[queue].partitions) == 5
    producer = broker.producer()
    ids = {producer.publish(queue, f"m{i}", key=f"k{i}") for i in range(20)}
    got: set[str] = set()
    with broker.consumer(queue, prefetch=20) as consumer:

        def drain() -> bool:
            d = consumer.get(timeout=0.2)
            if d is not None:
                got.add(d.id)
                d.ack()
            return got == ids

        until(drain, what="all 20 messages from the 5 partitions")


def test_suffixed_and_prefixed_topic_names_stay_available(kafka_url: str) -> None:
    queue = unique("names")
    admin = AdminClient({"bootstrap.servers": servers(kafka_url)})
    with workq.connect(with_query(kafka_url, "default_lane=suffixed")) as old:
        old.producer().publish(queue, b"old")
    with workq.connect(with_query(kafka_url, "topic_prefix=dev-")) as dev:
        dev.producer().publish(queue, b"dev")
        with dev.consumer(queue) as consumer:
            d = until(lambda: consumer.get(timeout=0.5), what="the prefixed topic's message")
            assert d.body == b"dev"
            d.ack()
    topics = admin.list_topics(timeout=WAIT).topics
    assert f"workq.{queue}.p0" in topics
    assert f"dev-{queue}" in topics
    assert queue not in topics


def test_the_async_producer_keys_records_too(kafka_url: str) -> None:
    queue = unique("aiokey")

    async def publish() -> str:
        async with await workq.aio.connect(kafka_url) as broker:
            return await broker.producer().publish(queue, b"x", key=b"\x01k")

    mid = asyncio.run(publish())
    plain = plain_consumer(kafka_url, queue)
    try:
        record = until(lambda: plain.poll(0.5), what="the async producer's record")
        assert record.key() == b"\x01k"
        assert dict(record.headers() or [])["x-workq-id"] == mid.encode()
    finally:
        plain.close()


def test_passive_declare_creates_no_topic(broker: workq.Broker, kafka_url: str) -> None:
    queue = unique("passive")
    admin = AdminClient({"bootstrap.servers": servers(kafka_url)})
    with pytest.raises(workq.QueueNotFound, match=queue):
        broker.declare(queue, passive=True)
    assert not [t for t in admin.list_topics(timeout=WAIT).topics if queue in t]
    create_topic(kafka_url, queue, 3)  # another team's topic: adopted as it is
    assert broker.declare(queue, passive=True).name == queue
    assert [t for t in admin.list_topics(timeout=WAIT).topics if queue in t] == [queue]


def test_a_new_lane_reaches_running_consumers_by_its_signal(kafka_url: str) -> None:
    """Another process's producer makes a tenant's lane topic and signals it
    (``<queue>.lanes``); a consumer that would not list the topics again for an hour
    finds the lane from the signal alone."""
    queue = unique("signal")
    with (
        workq.connect(kafka_url) as producing,
        workq.connect(with_query(kafka_url, "lane_sweep=3600")) as consuming,
    ):
        producing.producer().publish(queue, b"first")
        with consuming.consumer(queue) as consumer:
            first = until(lambda: consumer.get(timeout=0.5), what="the default lane's message")
            first.ack()
            producing.producer().publish(queue, b"late", tenant="newcomer")
            d = until(lambda: consumer.get(timeout=0.5), what="the signalled lane's message")
            assert (d.body, d.tenant) == (b"late", "newcomer")
            d.ack()
    admin = AdminClient({"bootstrap.servers": servers(kafka_url)})
    assert f"{queue}.lanes" in admin.list_topics(timeout=WAIT).topics


def test_a_lane_made_by_a_plain_client_is_found_by_the_sweep(kafka_url: str) -> None:
    """No signal for a lane topic a plain client makes: the periodic listing finds it."""
    queue = unique("sweep")
    with workq.connect(with_query(kafka_url, "lane_sweep=1")) as broker:
        broker.producer().publish(queue, b"first")
        with broker.consumer(queue) as consumer:
            first = until(lambda: consumer.get(timeout=0.5), what="the default lane's message")
            first.ack()
            create_topic(kafka_url, f"{queue}.p0.plain", 1)
            producer = Producer({"bootstrap.servers": servers(kafka_url)})
            producer.produce(f"{queue}.p0.plain", b"plain")
            producer.flush(WAIT)
            d = until(lambda: consumer.get(timeout=0.5), what="the plain lane's message")
            assert (d.body, d.tenant) == (b"plain", "plain")
            d.ack()


def test_a_plain_clients_record_in_an_idle_lane_is_found_by_the_idle_sweep(kafka_url: str) -> None:
    """A plain producer writes no work notes: the sweep of sleeping partitions' end
    offsets (``lane_idle_sweep``) finds its record and wakes the lane."""
    queue = unique("idle")
    topic = Naming("workq").lane_topic(Lane(queue, tenant="t"))
    with workq.connect(with_query(kafka_url, "lane_idle=2&lane_idle_sweep=1")) as broker:
        broker.producer().publish(queue, b"first", tenant="t")
        with broker.consumer(queue) as consumer:
            first = until(lambda: consumer.get(timeout=0.5), what="the first message")
            first.ack()
            parts = consumer._receiver._parts  # type: ignore[attr-defined]
            until(
                lambda: (
                    [p for p in list(parts.values()) if p.key[0] == topic]
                    and all(p.asleep for p in list(parts.values()) if p.key[0] == topic)
                ),
                what="the idle lane's partitions to sleep",
            )
            producer = Producer({"bootstrap.servers": servers(kafka_url)})
            producer.produce(topic, b"plain")
            assert producer.flush(WAIT) == 0
            d = until(lambda: consumer.get(timeout=0.5), what="the plain record, by the sweep")
            assert (d.body, d.tenant) == (b"plain", "t")
            d.ack()
