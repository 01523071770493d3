"""What both Kafka receivers (group and share) do with records, in one place.

Fetched records become deliveries (:meth:`Records.delivery`), fetch errors are logged
without flooding (:meth:`Records.fetch_error`), and a delivery going round again (retry,
delay bounce) or to the dead-letter topic becomes a record to re-publish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from ...driver import Received
from ...lanes import Lane
from ...spec import QueueSpec
from .logs import Throttle
from .producing import Record
from .topics import Naming
from .wire import REASON, decode, to_record

__all__ = ["Records"]

log = logging.getLogger("workq.kafka")


class Records:
    """One queue's record handling for a receiver.

    Args:
        naming: Topic names.
        spec: The queue (its ``key_header`` option names the header plain keys show as).
        republish: Durably sends records (the driver's producer).

    Example::

        records = Records(naming, spec, driver_republish)
        item, not_before = records.delivery(message, lane, token)
        records.retry(item, delay=5.0)  # back to the end of its lane in 5 s
    """

    def __init__(
        self, naming: Naming, spec: QueueSpec, republish: Callable[[Sequence[Record]], None]
    ) -> None:
        self.naming = naming
        self.spec = spec
        self.republish = republish
        self._key_header: str | None = spec.options.get("key_header", "key")
        self._topic_of: dict[Lane, str] = {}
        self._errors = Throttle()

    def topic(self, lane: Lane) -> str:
        """The lane's topic (cached: receives name a thousand lanes each time)."""
        topic = self._topic_of.get(lane)
        if topic is None:
            topic = self._topic_of[lane] = self.naming.lane_topic(lane)
        return topic

    def topics(self, lanes: Iterable[Lane]) -> frozenset[str]:
        return frozenset(map(self.topic, lanes))

    def lane_of(self, topic: str) -> Lane | None:
        """The queue's lane a topic holds, if it is one."""
        return self.naming.lane_of(topic, self.spec.name)

    def delivery(
        self, message: KafkaMessage, lane: Lane, token: Any
    ) -> tuple[Received, float | None]:
        """A fetched record as a delivery, and its not-before time if it has one."""
        return decode(message, lane, token, self._key_header)

    def fetch_error(self, error: KafkaError) -> None:
        """Log a consumer error, one line per kind a while (a broker that is down is
        reported on every poll); ends of partitions are not errors."""
        if error.code() == KafkaError._PARTITION_EOF:
            return
        allowed, suppressed = self._errors.allow(str(error.code()))
        if allowed:
            log.warning(
                "Kafka consumer of queue %r: %s%s",
                self.spec.name,
                error,
                f" ({suppressed} more since the last report)" if suppressed else "",
            )

    def again(self, item: Received, attempt: int, not_before: float | None) -> Record:
        """A record sending ``item`` round its lane again."""
        return to_record(self.topic(item.lane), item, attempt, not_before)

    def retry(self, item: Received, delay: float | None) -> None:
        """Re-publish ``item`` as its next attempt at the end of its lane, due after ``delay``."""
        not_before = time.time() + delay if delay else None
        self.republish([self.again(item, item.attempt + 1, not_before)])

    def dead_letter(self, item: Received, reason: str) -> None:
        """Publish ``item`` to the queue's dead-letter topic with ``reason``."""
        record = to_record(self.naming.dlq_topic(self.spec.name), item, item.attempt, None)
        record.headers.append((REASON, reason.encode()))
        self.republish([record])
