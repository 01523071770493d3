"""The Kafka backend's producer side: idempotent, ``acks=all``, waits for delivery reports."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ...errors import PublishError
from .settings import KafkaSettings

log = logging.getLogger("workq.kafka")

Headers = list[tuple[str, str | bytes | None]]


@dataclass(slots=True)
class Record:
    """One message to produce: topic, key, value and headers."""

    topic: str
    value: bytes
    headers: Headers
    key: bytes | None = None


@dataclass(slots=True)
class _Batch:
    pending: int
    failed: list[tuple[Record, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class _Failed(Exception):
    def __init__(self, failed: list[tuple[Record, str]]) -> None:
        super().__init__(failed[0][1])
        self.failed = failed


class Publisher:
    """A shared producer; a background thread serves delivery reports.

    ``send`` blocks until every record has a delivery report, retrying failed records
    with backoff, and raises ``PublishError`` naming the topic if they still fail.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        conf = dict(settings.client_config())
        conf.update(
            {
                # Idempotence gives acks=all, ordered retries and no duplicates from retries.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": settings.linger_ms,
                "message.timeout.ms": int(settings.publish_timeout * 1000),
            }
        )
        if settings.mode == "share":
            # A share consumer fetches one producer batch at a time and acquires all of
            # it: one record per batch keeps what one consumer acquires to one record.
            conf["batch.num.messages"] = 1
        self._producer = Producer(conf)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="workq-kafka-dr", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` and return once the broker has acknowledged all of them."""
        todo = list(records)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(max(self._settings.publish_retries, 1)),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                retry=retry_if_exception_type(_Failed),
                reraise=False,
            ):
                with attempt:
                    try:
                        self._send_once(todo)
                    except _Failed as exc:
                        todo = [r for r, _ in exc.failed]
                        log.warning("%d records failed, retrying: %s", len(todo), exc)
                        raise
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            failed = cause.failed if isinstance(cause, _Failed) else []
            record, reason = failed[0] if failed else (todo[0], str(cause))
            raise PublishError(
                f"Kafka did not accept {len(failed) or len(todo)} message(s) for topic "
                f"{record.topic!r} at {self._settings.redacted_url()} after "
                f"{self._settings.publish_retries} attempts: {reason}; check the broker "
                "is up and the topic exists, then publish again"
            ) from None

    def _send_once(self, records: Sequence[Record]) -> None:
        batch = _Batch(pending=len(records))
        lock = threading.Lock()

        def report(record: Record) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                with lock:
                    if err is not None:
                        batch.failed.append((record, str(err)))
                    batch.pending -= 1
                    if batch.pending == 0:
                        batch.done.set()

            return on_delivery

        deadline = time.monotonic() + self._settings.publish_timeout + 5
        for record in records:
            self.produce(record, report(record), deadline)
        if not batch.done.wait(max(deadline - time.monotonic(), 0)):
            raise _Failed([(records[0], "no delivery report in time")])
        if batch.failed:
            raise _Failed(batch.failed)

    def produce(
        self,
        record: Record,
        on_delivery: Callable[[KafkaError | None, Message], None],
        deadline: float | None = None,
    ) -> None:
        """Queue one record; ``on_delivery`` runs on the report thread."""
        end = (
            deadline if deadline is not None else time.monotonic() + self._settings.publish_timeout
        )
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # The local queue is full: wait for reports to drain it.
                if time.monotonic() > end:
                    raise _Failed([(record, "local producer queue stayed full")]) from None
                time.sleep(0.01)
            except KafkaException as exc:
                raise _Failed([(record, str(exc))]) from None

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._producer.flush(self._settings.publish_timeout)
        self._closed.set()
        self._thread.join(5)
