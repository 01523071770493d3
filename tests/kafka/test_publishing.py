"""The Kafka producer side: single publishes from many threads and tasks share one
producer (callers take turns polling it for delivery reports), sync and ``workq.aio``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import workq
from workq.backends.kafka.producing import Publisher, Record
from workq.backends.kafka.settings import KafkaSettings
from workq.errors import PublishError
from workq.testing.conformance import WAIT, unique, until, with_query

pytestmark = pytest.mark.kafka

THREADS = 12
EACH = 15


@pytest.fixture
def broker(kafka_url: str) -> Iterator[workq.Broker]:
    with workq.connect(kafka_url) as broker:
        yield broker


def drain(broker: workq.Broker, queue: str, want: int) -> list[workq.Delivery]:
    got: list[workq.Delivery] = []
    with broker.consumer(queue, prefetch=100) as c:
        while len(got) < want:
            d = c.get(timeout=WAIT)
            assert d is not None, f"only {len(got)} of {want} messages arrived"
            d.ack()
            got.append(d)
    return got


def quiet(publisher: Publisher) -> None:
    """No report is due and, once the background threads rest (they poll a moment
    longer after the last report they served), nobody polls or waits: every turn was
    handed back."""
    for turn in publisher._turns.values():
        assert turn.pending == 0
        until(lambda t=turn: not t.polling and not t.waiters, what="the turn handed back")


def test_single_publishes_from_many_threads_all_arrive(broker: workq.Broker) -> None:
    queue = unique("kp")
    broker.declare(queue)
    start = threading.Barrier(THREADS)
    ids: list[str] = []
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        producer = broker.producer()
        start.wait()
        try:
            for i in range(EACH):
                ids.append(producer.publish(queue, f"{n}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = drain(broker, queue, THREADS * EACH)
    assert sorted(d.id for d in got) == sorted(ids)
    assert len(set(ids)) == THREADS * EACH


def test_concurrent_aio_publishes_all_arrive(kafka_url: str, broker: workq.Broker) -> None:
    queue = unique("ka")
    broker.declare(queue)

    async def publish() -> list[str]:
        async with await workq.aio.connect(kafka_url) as abroker:
            producer = abroker.producer()
            one = [await producer.publish(queue, "first")]
            rest = await asyncio.gather(
                *(producer.publish(queue, f"m{i}") for i in range(THREADS * EACH))
            )
            return one + list(rest)

    ids = asyncio.run(publish())
    got = drain(broker, queue, len(ids))
    assert sorted(d.id for d in got) == sorted(ids)


def test_aio_publish_to_a_new_tenant_lane_arrives_on_it(
    kafka_url: str, broker: workq.Broker
) -> None:
    queue = unique("kt")
    broker.declare(queue)

    async def publish() -> str:
        async with await workq.aio.connect(kafka_url) as abroker:
            return await abroker.producer().publish(queue, "hello", tenant="acme")

    mid = asyncio.run(publish())
    (d,) = drain(broker, queue, 1)
    assert (d.id, d.tenant, d.text()) == (mid, "acme", "hello")


def test_threads_tasks_and_callbacks_take_turns_on_one_publisher(
    kafka_url: str, broker: workq.Broker
) -> None:
    """Sync callers polling in turn, asyncio publishes served by the background thread
    and fire-and-forget ``produce`` callbacks, all at once on one publisher."""
    settings = KafkaSettings.from_url(kafka_url)
    topic = unique("kturn")
    broker.declare(topic)  # its default lane is the topic of that name
    publisher = Publisher(settings)
    reports: list[bool] = []
    reported = threading.Event()
    callbacks = 20

    def on_delivery(err: object, msg: object) -> None:
        reports.append(err is None)
        if len(reports) == callbacks:
            reported.set()

    def record(i: int) -> Record:
        return Record(topic, f"v{i}".encode(), [])

    errors: list[BaseException] = []
    start = threading.Barrier(THREADS + 1)

    def sync_sender() -> None:
        start.wait()
        try:
            for i in range(EACH):
                publisher.send([record(i)])
        except BaseException as exc:
            errors.append(exc)

    async def async_sender() -> None:
        await asyncio.gather(*(publisher.send_async([record(i)]) for i in range(EACH * 4)))
        await publisher.send_async([record(i) for i in range(10)])

    threads = [threading.Thread(target=sync_sender) for _ in range(THREADS)]
    try:
        for t in threads:
            t.start()
        start.wait()
        for i in range(callbacks):
            publisher.produce(record(i), on_delivery)
        asyncio.run(async_sender())
        for t in threads:
            t.join()
        assert reported.wait(WAIT)
        assert not errors
        assert reports == [True] * callbacks
        quiet(publisher)
    finally:
        publisher.close()


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_a_record_the_broker_refuses_raises_publish_error(kafka_url: str, api: str) -> None:
    """A delivery report with an error fails the publish after the bounded retries,
    sync and aio alike, and leaves the turns handed back."""
    url = with_query(kafka_url, "publish_timeout=5&publish_retries=1")
    publisher = Publisher(KafkaSettings.from_url(url))
    # An invalid topic name: the broker answers every produce with an error.
    bad = Record("not a valid topic!", b"x", [])
    try:
        with pytest.raises(PublishError, match="not a valid topic!"):
            if api == "sync":
                publisher.send([bad])
            else:
                asyncio.run(publisher.send_async([bad]))
        quiet(publisher)
    finally:
        publisher.close()
