"""SQS-specific behaviour on a real SQS server (moto): names, batching, limits, errors."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

import workq
from workq.backends.sqs.client import retryable
from workq.backends.sqs.codec import Meta, attributes
from workq.backends.sqs.driver import SQSDriver
from workq.backends.sqs.naming import dlq_name, lane_name, lane_prefix, parse_lane
from workq.driver import Received, Receiver
from workq.lanes import Lane
from workq.producer import MessageTooLarge
from workq.testing.brokers import free_port
from workq.testing.conformance import QUIET, WAIT, until, with_query

pytestmark = pytest.mark.sqs


def driver_of(broker: workq.Broker) -> SQSDriver:
    assert isinstance(broker.driver, SQSDriver)
    return broker.driver


def count_requests(broker: workq.Broker) -> Counter[str]:
    """Count SQS API requests this broker sends from now on, by operation."""
    driver_of(broker).doorbell.reads = 0
    counts = driver_of(broker).sqs.requests
    counts.clear()
    return counts


def receive_all(receiver: Receiver, lanes: list[Lane], n: int) -> list[Received]:
    """Receive until ``n`` are held (bounded by ``WAIT``)."""
    items: list[Received] = []

    def enough() -> bool:
        items.extend(receiver.receive(lanes, n - len(items), 1.0))
        return len(items) >= n

    until(enough, what=f"{n} messages")
    return items


# -- names --------------------------------------------------------------------------


NAMES = ["a", "a_", "a_p0", "a__b", "a-b", "p0", "a_t", "x" * 64, "_", "__", "-_-"]
TENANTS = [None, "t", "a_b", "b_p1", "_", "y" * 64]


@pytest.mark.parametrize("exact", [True, False])
def test_lane_names_are_valid_unique_and_parse_back(exact: bool) -> None:
    seen: dict[str, tuple[str, str | None, int]] = {}
    for prefix, queue, tenant, priority in itertools.product(
        ["", "dev-", "p_"], NAMES, TENANTS, [0, 7, 255]
    ):
        lane = Lane(queue, tenant, priority)
        name = lane_name(prefix, lane, exact)
        assert len(name) <= 80 and all(c.isalnum() or c in "_-" for c in name), name
        if exact and lane == Lane(queue):
            assert name == prefix + queue  # plain clients find it by the queue's name
            continue
        assert name.startswith(lane_prefix(prefix, queue))
        key = (prefix + "|" + queue, tenant, priority)
        assert seen.setdefault(name, key) == key, f"{name} names two lanes"
        parsed = parse_lane(prefix, queue, name, exact)
        assert parsed is not None
        got_priority, got_tenant, hashed = parsed
        assert got_priority == priority
        assert got_tenant == (None if hashed else tenant)
        # No other queue claims this lane.
        for other in NAMES:
            if other != queue:
                assert parse_lane(prefix, other, name, exact) is None, (other, name)
        assert dlq_name(prefix, queue) != name


def test_an_exact_default_lane_parses_back_and_suffixed_p0_is_not_a_lane() -> None:
    assert parse_lane("", "orders", "orders") == (0, None, False)
    assert parse_lane("dev-", "orders", "dev-orders") == (0, None, False)
    # The layout of earlier versions is not read as the default lane, unless asked for.
    assert parse_lane("", "orders", "orders_p0") is None
    assert parse_lane("", "orders", "orders_p0", exact=False) == (0, None, False)


def test_long_queue_and_tenant_names_round_trip(broker: workq.Broker) -> None:
    queue = "q" + uuid.uuid4().hex + "_" * 20 + "z" * 11
    tenant = "T_" + "t" * 62
    assert len(queue) == 64
    broker.producer().publish(queue, "far", tenant=tenant, priority=3)
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None and (d.tenant, d.priority, d.text()) == (tenant, 3, "far")
        d.ack()


# -- batching -----------------------------------------------------------------------


def test_publish_receive_and_ack_go_in_batches_of_ten(broker: workq.Broker, queue: str) -> None:
    broker.declare(queue)
    counts = count_requests(broker)
    broker.producer().publish_many(queue, [f"m{i}" for i in range(30)])
    assert counts["SendMessageBatch"] == 3 and counts["SendMessage"] == 0
    with broker.consumer(queue, prefetch=30) as c:
        got: list[workq.Delivery] = []
        while len(got) < 30:
            d = c.get(timeout=WAIT)
            assert d is not None
            got.append(d)
        for d in got:
            d.ack()
    # Three receives of ten, and one more that finds the lane empty; doorbell reads aside.
    assert counts["ReceiveMessage"] - driver_of(broker).doorbell.reads <= 4
    assert counts["DeleteMessageBatch"] == 3 and counts["DeleteMessage"] == 0
    until(lambda: broker.stats(queue).in_flight == 0, what="the deletes to land")


def test_acks_left_over_from_a_full_batch_wait_for_more(sqs_url: str, queue: str) -> None:
    """13 acks then 7 more within the linger: two full DeleteMessageBatch, not 10 + 3 + 7."""
    with workq.connect(with_query(sqs_url, "ack_linger=1.0")) as broker:
        spec = broker.declare(queue)
        broker.producer().publish_many(queue, [str(i) for i in range(20)])
        driver = driver_of(broker)
        counts = count_requests(broker)
        receiver = driver.open(spec, 20)
        items = receive_all(receiver, driver.lanes(spec), 20)
        with driver.deleter._cond:  # the 13 arrive together, before the sender wakes
            for item in items[:13]:
                receiver.ack(item)
        until(lambda: counts["DeleteMessageBatch"] >= 1, what="the full batch to go at once")
        for item in items[13:]:
            receiver.ack(item)
        receiver.close()
        assert counts["DeleteMessageBatch"] == 2
        until(lambda: broker.stats(queue).in_flight == 0, what="the deletes to land")


def test_extend_and_release_go_in_batches(broker: workq.Broker, queue: str) -> None:
    spec = broker.declare(queue, lease=60.0)
    broker.producer().publish_many(queue, [str(i) for i in range(12)])
    driver = driver_of(broker)
    counts = count_requests(broker)
    receiver = driver.open(spec, 12)
    items = receive_all(receiver, driver.lanes(spec), 12)
    receiver.extend(items, 60.0)
    assert counts["ChangeMessageVisibilityBatch"] == 2
    counts.clear()
    receiver.release(items)
    # Sent again with the attempt so far, the received copies deleted: batched both ways.
    assert counts["SendMessageBatch"] == 2 and counts["DeleteMessageBatch"] == 2
    assert counts["ChangeMessageVisibilityBatch"] == 0
    receiver.close()
    # Released at once (the lease is 60 s) and not counted as an attempt.
    with broker.consumer(queue, prefetch=12) as c:
        again = [c.get(timeout=WAIT) for _ in range(12)]
        assert all(d is not None and d.attempt == 1 for d in again)
        for d in again:
            assert d is not None
            d.ack()


# -- limits and layout ----------------------------------------------------------------


def test_oversized_body_raises_before_sending(broker: workq.Broker, queue: str) -> None:
    broker.declare(queue)
    counts = count_requests(broker)
    with pytest.raises(MessageTooLarge, match=queue):
        broker.producer().publish(queue, b"x" * 300_000)
    # Binary bodies go base64, so a smaller one is already too big once encoded.
    with pytest.raises(MessageTooLarge, match="base64"):
        broker.producer().publish(queue, b"\xff" * 200_000)
    assert counts["SendMessageBatch"] == 0


def test_binary_and_empty_bodies_round_trip(broker: workq.Broker, queue: str) -> None:
    bodies = [b"", bytes(range(256)), b"\x00 control \x1b", b"x" * 150_000]
    broker.producer().publish_many(queue, bodies)
    with broker.consumer(queue, prefetch=4) as c:
        got = [c.get(timeout=WAIT) for _ in bodies]
        assert sorted(d.body for d in got if d) == sorted(bodies)
        for d in got:
            assert d is not None
            d.ack()


def test_foreign_message_is_delivered_with_defaults(broker: workq.Broker, queue: str) -> None:
    spec = broker.declare(queue)
    driver = driver_of(broker)
    url = driver.lane_url(spec, Lane(queue), create=True)
    driver.sqs.client.send_message(QueueUrl=str(url), MessageBody="from elsewhere")
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None and (d.text(), d.attempt, d.tenant) == ("from elsewhere", 1, None)
        d.ack()


def test_delay_beyond_fifteen_minutes_is_held_back(broker: workq.Broker, queue: str) -> None:
    broker.producer().publish(queue, "next hour", delay=3600)
    with broker.consumer(queue) as c:
        assert c.get(timeout=QUIET) is None
    # Still there, re-sent with its remaining delay whenever SQS shows it early.
    until(lambda: broker.stats(queue).lanes[0].delayed == 1, what="the delayed message")


def test_messages_shown_before_their_time_are_sent_on_in_batches(
    broker: workq.Broker, queue: str
) -> None:
    """A not-before time beyond what SQS could delay: the early copies go back batched."""
    spec = broker.declare(queue)
    driver = driver_of(broker)
    url = str(driver.lane_url(spec, Lane(queue), create=True))
    later = time.time() + 3600
    metas = [Meta(f"m{i}", None, 0, {}, time.time(), not_before=later) for i in range(12)]
    for start in (0, 10):
        driver.sqs.client.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": meta.id, "MessageAttributes": attributes(meta)}
                for i, meta in enumerate(metas[start : start + 10])
            ],
        )
    counts = count_requests(broker)
    with broker.consumer(queue, prefetch=12) as c:
        assert c.get(timeout=QUIET) is None
    assert counts["SendMessage"] == 0 and counts["DeleteMessage"] == 0
    assert counts["SendMessageBatch"] == counts["DeleteMessageBatch"] >= 2
    until(lambda: broker.stats(queue).lanes[0].delayed == 12, what="12 delayed messages")


def test_implicit_declare_adopts_stored_settings(sqs_url: str, queue: str) -> None:
    with workq.connect(sqs_url) as first:
        spec = first.declare(queue, lease=7.0, max_attempts=3, max_priority=4)
    with workq.connect(sqs_url) as second:
        assert second.spec(queue) == spec
        with pytest.raises(workq.ConfigurationError, match="lease"):
            second.declare(queue, lease=8.0, max_attempts=3, max_priority=4)


def test_dead_letters_reading_removes_nothing(broker: workq.Broker, queue: str) -> None:
    broker.producer().publish_many(queue, ["a", "b"])
    with broker.consumer(queue, prefetch=2) as c:
        for d in [c.get(timeout=WAIT), c.get(timeout=WAIT)]:
            assert d is not None
            d.reject(reason=f"bad {d.text()}")
    first = broker.dead_letters(queue)
    assert sorted(x.reason for x in first) == ["bad a", "bad b"]
    assert sorted(x.id for x in broker.dead_letters(queue)) == sorted(x.id for x in first)
    assert broker.redrive(queue) == 2
    assert broker.dead_letters(queue) == []


# -- errors -----------------------------------------------------------------------------


def test_unreachable_endpoint_raises_broker_unavailable() -> None:
    url = f"sqs://us-east-1?endpoint_url=http://127.0.0.1:{free_port()}"
    url = with_query(url, "publish_retries=1&publish_timeout=2&connect_timeout=1")
    with pytest.raises(workq.BrokerUnavailable, match=r"127\.0\.0\.1"):
        workq.connect(url)


def test_bad_options_raise_configuration_error(sqs_url: str, queue: str) -> None:
    with pytest.raises(workq.ConfigurationError, match="queue_prefix"):
        workq.connect(with_query(sqs_url, "queue_prefix=no.dots"))
    with workq.connect(sqs_url) as broker, pytest.raises(workq.ConfigurationError, match="fifo"):
        broker.declare(queue, fifo=True)


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "x"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendMessageBatch")


def test_throttling_and_server_errors_are_retryable() -> None:
    assert retryable(_client_error("ThrottlingException", 400))
    assert retryable(_client_error("RequestThrottled", 403))
    assert retryable(_client_error("InternalError", 500))
    assert not retryable(_client_error("InvalidParameterValue", 400))


def test_a_lane_deleted_out_of_band_is_declared_again_on_publish(
    broker: workq.Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = broker.declare(queue)
    driver = driver_of(broker)
    url = driver.lane_url(spec, Lane(queue), create=True)
    producer = broker.producer()
    producer.publish(queue, "before")
    boto3.client("sqs", endpoint_url=driver.settings.endpoint_url).delete_queue(QueueUrl=str(url))
    with caplog.at_level("WARNING", logger="workq.sqs"):
        mid = producer.publish(queue, "after")
        producer.publish(queue, "and again")
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "vanished" in caplog.records[0].message and queue in caplog.records[0].message
    with broker.consumer(queue, prefetch=2) as c:
        got = [c.get(timeout=WAIT) for _ in range(2)]
        assert sorted(d.text() for d in got if d) == ["after", "and again"]
        assert mid in {d.id for d in got if d}
        for d in got:
            assert d is not None
            d.ack()


def test_nack_beyond_twelve_hours_re_sends_the_message(broker: workq.Broker, queue: str) -> None:
    broker.producer().publish(queue, "tomorrow")
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None
        d.nack(delay=2 * 86400)
        assert c.get(timeout=QUIET) is None

    def parked() -> bool:
        lane = broker.stats(queue).lanes[0]
        return (lane.ready, lane.in_flight, lane.delayed) == (0, 0, 1)

    until(parked, what="the message to wait in the delayed state")


def test_redrive_of_large_dead_letters_respects_the_batch_size_limit(
    broker: workq.Broker, queue: str
) -> None:
    """Ten dead letters of 150 kB are more than one SendMessageBatch may carry."""
    bodies = [f"{i}".ljust(150_000, "x") for i in range(10)]
    broker.producer().publish_many(queue, bodies)
    with broker.consumer(queue, prefetch=10) as c:
        for _ in bodies:
            d = c.get(timeout=WAIT)
            assert d is not None
            d.reject(reason="too big to handle")
    until(lambda: len(broker.dead_letters(queue, limit=20)) == 10, what="10 dead letters")
    assert broker.redrive(queue) == 10
    assert broker.dead_letters(queue) == []
    with broker.consumer(queue, prefetch=10) as c:
        back = [c.get(timeout=WAIT) for _ in bodies]
        assert sorted(d.text() for d in back if d) == sorted(bodies)
        for d in back:
            assert d is not None and d.attempt == 1
            d.ack()
