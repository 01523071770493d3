"""Reading a queue's dead-letter topic from where the last redrive left off.

The DLQ topic has one partition; the redrive group's committed offset marks what was
redriven, so ``dead_letters()`` lists only what is still dead and ``redrive()`` resumes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from ...driver import Received
from ...errors import BrokerUnavailable
from ...spec import QueueSpec
from .settings import KafkaSettings
from .topics import Naming
from .wire import decode_dead

__all__ = ["dlq_reader", "read_dead"]


def dlq_reader(
    settings: KafkaSettings, naming: Naming, topics: set[str], spec: QueueSpec
) -> Consumer | None:
    """A consumer of the DLQ at the redrive group's committed offset; None if no DLQ
    (``topics``: the cluster's topics)."""
    topic = naming.dlq_topic(spec.name)
    if topic not in topics:
        return None
    conf: dict[str, Any] = dict(settings.client_config())
    conf.update(
        {
            "group.id": naming.redrive_group(spec.name),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "client.id": f"workq-dlq-{uuid.uuid4().hex[:8]}",
        }
    )
    consumer = Consumer(conf)
    tp = TopicPartition(topic, 0)
    (committed,) = consumer.committed([tp], timeout=settings.connect_timeout)
    start = committed.offset if committed.offset >= 0 else 0
    consumer.assign([TopicPartition(topic, 0, start)])
    return consumer


def read_dead(
    consumer: Consumer, spec: QueueSpec, limit: int, timeout: float
) -> list[tuple[int, Received, str]]:
    """Up to ``limit`` dead letters from ``consumer``'s position, within ``timeout``
    seconds: (offset, the message, the reason)."""
    out: list[tuple[int, Received, str]] = []
    deadline = time.monotonic() + timeout
    while len(out) < limit and time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                break
            raise BrokerUnavailable(f"reading dead letters of {spec.name!r}: {error}")
        item, reason = decode_dead(message, spec.name)
        out.append((message.offset() or 0, item, reason))
    return out
