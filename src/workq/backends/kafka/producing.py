"""The Kafka backend's producer side: idempotent, ``acks=all``, waits for delivery reports."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ...errors import PublishError
from ...retrying import PUBLISH, Deadline
from .logs import client_logger
from .settings import KafkaSettings

log = logging.getLogger("workq.kafka")

Headers = list[tuple[str, str | bytes | None]]


__all__ = ["Publisher", "Record"]


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


#: ``linger.ms`` per path when the setting is not given: a single publish goes at once;
#: a batch waits a little so the records queued behind the first share its request.
LINGER_SINGLE = 0
LINGER_BATCH = 5
_FATAL_CODES = frozenset({KafkaError._FATAL, KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


class Publisher:
    """Shared producers, one per path; a background thread per path serves its reports.

    ``send`` blocks until every record has a delivery report, retrying failed records
    with backoff within ``publish_timeout`` in total, and raises ``PublishError`` naming
    the topic if they still fail. A producer that failed fatally (for instance fenced
    after a broker outage) is replaced, so the next publish works on a fresh one.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._producers: dict[str, Producer] = {}
        self._broken: set[str] = set()
        self._closed = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._get("single")

    def _config(self, path: str) -> dict[str, str | int]:
        conf = dict(self._settings.client_config())
        if "linger_ms" in self._settings.model_fields_set:
            linger = self._settings.linger_ms
        else:
            linger = LINGER_BATCH if path == "batch" else LINGER_SINGLE
        conf.update(
            {
                # Idempotence gives acks=all, ordered retries and no duplicates from retries.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger,
                "message.timeout.ms": int(self._settings.publish_timeout * 1000),
            }
        )
        if self._settings.mode == "share":
            # A share consumer fetches one producer batch at a time and acquires all of
            # it: one record per batch keeps what one consumer acquires to one record.
            conf["batch.num.messages"] = 1
        return conf

    def _get(self, path: str) -> Producer:
        """The producer of ``path`` ("single" or "batch"), new if it broke."""
        with self._lock:
            producer = self._producers.get(path)
            if producer is None or path in self._broken:
                if producer is not None:
                    log.warning(
                        "the Kafka producer failed fatally (fenced or out of sequence after "
                        "an outage); publishing on a new one"
                    )
                producer = Producer(self._config(path), logger=client_logger())
                self._producers[path] = producer
                self._broken.discard(path)
                if path not in self._threads:
                    # A thread per path: one thread taking turns to block in each
                    # producer's poll held a single publish's report back while it
                    # waited on the batch producer (up to 25 ms a publish).
                    thread = threading.Thread(
                        target=self._serve, args=(path,), name=f"workq-kafka-dr-{path}", daemon=True
                    )
                    self._threads[path] = thread
                    thread.start()
            return producer

    def _serve(self, path: str) -> None:
        while not self._closed.is_set():
            with self._lock:
                producer = self._producers[path]
            producer.poll(0.05)

    def _note(self, path: str, err: KafkaError | None) -> None:
        if err is not None and (err.fatal() or err.code() in _FATAL_CODES):
            with self._lock:
                self._broken.add(path)

    def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` and return once the broker has acknowledged all of them."""
        todo = list(records)
        path = "batch" if len(todo) > 1 else "single"
        # publish_timeout bounds the whole call, retries included.
        deadline = Deadline(self._settings.publish_timeout)
        try:
            for attempt in PUBLISH.retrying(
                _Failed,
                attempts=self._settings.publish_retries + 1,
                deadline=deadline,
                # A try with less than this left could not get its delivery reports.
                reserve=0.1,
            ):
                with attempt:
                    try:
                        self._send_once(todo, path, deadline.at)
                    except _Failed as exc:
                        todo = [r for r, _ in exc.failed]
                        log.warning("%d records failed, retrying: %s", len(todo), exc)
                        raise
        except _Failed as exc:
            failed = exc.failed
            record, reason = failed[0] if failed else (todo[0], str(exc))
            raise PublishError(
                f"Kafka did not accept {len(failed) or len(todo)} message(s) for topic "
                f"{record.topic!r} at {self._settings.redacted_url()} within "
                f"publish_timeout={self._settings.publish_timeout}s: {reason}; check the "
                "broker is up and the topic exists, then publish again"
            ) from None

    def _send_once(self, records: Sequence[Record], path: str, deadline: float) -> None:
        batch = _Batch(pending=len(records))
        lock = threading.Lock()

        def report(record: Record) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                self._note(path, err)
                with lock:
                    if err is not None:
                        batch.failed.append((record, str(err)))
                    batch.pending -= 1
                    if batch.pending == 0:
                        batch.done.set()

            return on_delivery

        producer = self._get(path)
        for record in records:
            self._produce(producer, path, record, report(record), deadline)
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
        """Queue one record on the batch path; ``on_delivery`` runs on the report thread."""
        end = (
            deadline if deadline is not None else time.monotonic() + self._settings.publish_timeout
        )

        def report(err: KafkaError | None, msg: Message) -> None:
            self._note("batch", err)
            on_delivery(err, msg)

        self._produce(self._get("batch"), "batch", record, report, end)

    def _produce(
        self,
        producer: Producer,
        path: str,
        record: Record,
        on_delivery: Callable[[KafkaError | None, Message], None],
        end: float,
    ) -> None:
        while True:
            try:
                producer.produce(
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
                error = exc.args[0] if exc.args else None
                self._note(path, error if isinstance(error, KafkaError) else None)
                raise _Failed([(record, str(exc))]) from None

    def close(self) -> None:
        if self._closed.is_set():
            return
        with self._lock:
            producers = list(self._producers.values())
        for producer in producers:
            producer.flush(self._settings.publish_timeout)
        self._closed.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(5)
