"""Interop with plain SQS clients (boto3) on the other end, and adopting their queues."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import boto3
import pytest

import workq
import workq.aio
from workq.backends.sqs.deadletters import MOVED_BY_SQS
from workq.backends.sqs.driver import SQSDriver
from workq.testing.conformance import QUIET, WAIT, unique, until

pytestmark = pytest.mark.sqs


@pytest.fixture
def sqs(broker: workq.Broker) -> Any:
    """A plain boto3 client on the same endpoint."""
    assert isinstance(broker.driver, SQSDriver)
    return boto3.client("sqs", endpoint_url=broker.driver.settings.endpoint_url)


def names_like(sqs: Any, prefix: str) -> list[str]:
    urls = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return sorted(url.rsplit("/", 1)[-1] for url in urls)


def test_plain_producer_to_workq_consumer(broker: workq.Broker, sqs: Any) -> None:
    queue = unique("i")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody='{"order": 7}',
        MessageAttributes={
            "traceparent": {"DataType": "String", "StringValue": "00-abc-def-01"},
            "retries": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    before = time.time()
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None
        assert d.id == sent["MessageId"]
        assert d.json() == {"order": 7}
        assert d.headers == {"traceparent": "00-abc-def-01", "retries": "3", "blob": "AAE="}
        assert (d.attempt, d.tenant, d.priority) == (1, None, 0)
        assert before - 60 < d.enqueued_at.timestamp() <= time.time()
        d.nack()
        again = c.get(timeout=WAIT)
        assert again is not None
        # ApproximateReceiveCount is the attempt; the id stays SQS's MessageId.
        assert (again.id, again.attempt) == (sent["MessageId"], 2)
        again.ack()
    # Adopted as it is; beside it workq's dead-letter queue (which stores its settings)
    # and the doorbell its consumers wait on.
    assert names_like(sqs, queue) == [queue, f"{queue}_bell", f"{queue}_dlq"]


def test_workq_producer_to_plain_consumer(broker: workq.Broker, sqs: Any) -> None:
    queue = unique("i")
    headers = {"traceparent": "00-abc-def-01"} | {f"h{i}": str(i) for i in range(12)}
    mid = broker.producer().publish(queue, {"order": 7}, headers=headers)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]  # the default lane: named as the queue

    def receive() -> list[Any]:
        got = sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        return list(got)

    (m,) = until(receive, what="the message on the plain consumer's side")
    assert json.loads(m["Body"]) == {"order": 7}
    attrs = m["MessageAttributes"]
    assert len(attrs) <= 10
    assert attrs["traceparent"]["StringValue"] == "00-abc-def-01"
    assert attrs["content-type"]["StringValue"] == "application/json"
    # workq's own metadata, with the headers that did not fit, packed in one attribute.
    meta = json.loads(attrs["workq"]["StringValue"])
    assert meta["id"] == mid
    own = {k: v["StringValue"] for k, v in attrs.items() if k != "workq"}
    assert own | meta["h"] == headers | {"content-type": "application/json"}
    # And workq reads back every header.
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
    )
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None and d.id == mid
        assert d.headers == headers | {"content-type": "application/json"}
        d.ack()


def test_a_queue_with_its_own_redrive_policy_is_adopted(broker: workq.Broker, sqs: Any) -> None:
    queue = unique("i")
    dlq_url = sqs.create_queue(QueueName=f"{queue}-dead")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    sqs.create_queue(
        QueueName=queue, Attributes={"VisibilityTimeout": "7", "RedrivePolicy": policy}
    )
    spec = broker.spec(queue)
    assert (spec.lease, spec.max_attempts) == (7.0, 2)
    producer = broker.producer()
    producer.publish(queue, "bad")
    with broker.consumer(queue) as c:
        d = c.get(timeout=WAIT)
        assert d is not None
        d.reject(reason="bad input")
    # Its dead-letter queue took it; workq made no queue of its own for dead letters.
    assert names_like(sqs, queue) == sorted([queue, f"{queue}-dead", f"{queue}_bell"])
    (letter,) = (
        until(broker.dead_letters, what="the dead letter", args=(queue,))
        if False
        else [until(lambda: broker.dead_letters(queue), what="the dead letter")[0]]
    )
    assert (letter.reason, letter.attempt) == ("bad input", 1)
    # Nacked max_attempts (= maxReceiveCount) times: workq dead-letters it there too.
    producer.publish(queue, "fails twice")
    with broker.consumer(queue) as c:
        for _ in range(2):
            d = c.get(timeout=WAIT)
            assert d is not None
            d.nack()
    until(lambda: len(broker.dead_letters(queue)) == 2, what="the second dead letter")
    # A consumer that crashed twice (a plain one here): SQS moves it on the next receive.
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="crashes twice")
    for _ in range(2):
        (m,) = until(lambda: sqs.receive_message(QueueUrl=url).get("Messages"), what="it")
        handle = m["ReceiptHandle"]
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    with broker.consumer(queue) as c:
        assert c.get(timeout=QUIET) is None

    def moved() -> bool:
        return any(x.reason == MOVED_BY_SQS for x in broker.dead_letters(queue))

    until(moved, what="SQS to move the message after maxReceiveCount")


def test_passive_declare_creates_nothing(broker: workq.Broker, sqs: Any) -> None:
    queue = unique("i")
    with pytest.raises(workq.QueueNotFound, match="passive"):
        broker.declare(queue, passive=True)
    assert names_like(sqs, queue) == []
    sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "9"})
    assert broker.declare(queue, passive=True).lease == 9.0
    assert names_like(sqs, queue) == [queue]

    async def aio() -> workq.QueueSpec:
        async with await workq.aio.connect(broker.settings) as abroker:
            with pytest.raises(workq.QueueNotFound):
                await abroker.declare(unique("i"), passive=True)
            return await abroker.declare(queue, passive=True)

    assert asyncio.run(aio()).lease == 9.0
    assert names_like(sqs, queue) == [queue]


def test_a_failed_declaration_leaves_nothing_behind(broker: workq.Broker, sqs: Any) -> None:
    queue = unique("i")
    with pytest.raises(workq.ConfigurationError, match="fifo"):
        broker.declare(queue, fifo=True)
    broker.declare(queue, lease=5.0)
    made = names_like(sqs, queue)
    with pytest.raises(workq.ConfigurationError, match="lease"):
        broker.declare(queue, lease=6.0)
    assert names_like(sqs, queue) == made
