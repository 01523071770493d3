"""The Kafka backend's producer side: idempotent, ``acks=all``, waits for delivery reports."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


class _Batch:
    """The records of one ``send`` try: how many reports are still due, which failed.

    Its reports run on whichever thread polls the producer: one at a time (the polling
    turn is held by one thread), but ``close`` flushes outside the turn, so the count is
    a list each report pops one item off (a single call, atomic under the GIL).
    """

    __slots__ = ("due", "failed", "wake")

    def __init__(self, left: int) -> None:
        self.due = [None] * left
        self.failed: list[tuple[Record, str]] = []
        #: Set when the last report is in, or when the polling turn is handed over.
        self.wake = threading.Event()

    def report(self, record: Record, note: Callable[[KafkaError | None], None]) -> Report:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                note(err)
                self.failed.append((record, str(err)))
            self.due.pop()
            if not self.due:
                self.wake.set()

        return on_delivery


Report = Callable[[KafkaError | None, Message], None]


class _Turn:
    """Whose turn it is to poll one producer for its delivery reports.

    A caller waiting for its reports polls the producer itself, so a report reaches it
    without a thread hand-off (the round trip a single publish costs). One thread polls
    at a time; the others wait for their batch or for the turn to be handed to them,
    served meanwhile by the poller (one poll serves every report that is in). Whoever
    stops polling, or leaves while others wait, hands the turn on.

    ``pending`` counts reports nobody waits for by polling (``workq.aio`` publishes and
    ``produce`` callbacks): while it is above zero, and for ``BUSY_GRACE`` after, the
    path's background thread polls.
    """

    __slots__ = ("busy_until", "lock", "pending", "polling", "serving", "waiters", "work")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.polling = False
        self.waiters: set[threading.Event] = set()
        self.pending = 0
        #: Set when ``pending`` rises while the background thread is not serving it.
        self.work = threading.Event()
        #: Whether the background thread is serving ``pending`` (it needs no wake-up).
        self.serving = False
        #: The background thread serves until this (monotonic) time at least.
        self.busy_until = 0.0

    def take(self, wake: threading.Event) -> bool:
        """Take the turn if it is free (True), else queue ``wake`` for a hand-off."""
        with self.lock:
            if not self.polling:
                self.polling = True
                return True
            self.waiters.add(wake)
            return False

    def give_up(self) -> None:
        with self.lock:
            self.polling = False

    def leave(self, wake: threading.Event) -> None:
        """Stop waiting; if nobody polls and others wait, hand the turn to one of them."""
        with self.lock:
            self.waiters.discard(wake)
            if not self.polling and self.waiters:
                self.waiters.pop().set()

    def add_pending(self, count: int) -> None:
        with self.lock:
            self.pending += count
            self.busy_until = time.monotonic() + BUSY_GRACE
        # Waking the thread costs the caller tens of microseconds (a futex call, more on
        # a busy machine): only when it is not serving already.
        if not self.serving:
            self.work.set()

    def idle(self) -> bool:
        """No report due and none for ``BUSY_GRACE``: the background thread may rest."""
        return self.pending <= 0 and time.monotonic() >= self.busy_until

    def settle(self) -> None:
        with self.lock:
            self.pending -= 1


class _Failed(Exception):
    def __init__(self, failed: list[tuple[Record, str]]) -> None:
        super().__init__(failed[0][1])
        self.failed = failed


#: ``linger.ms`` per path when the setting is not given. One record a caller waits for
#: goes at once: lingering would only add to its wait (records queued while a request is
#: in flight share the next one anyway). Several records (``publish_many``, a consumer's
#: delay bounces) wait a little so those behind the first share its request: at linger 0
#: the first records of a batch each left in a request of their own, up to the in-flight
#: limit, and batches of 500 went at less than half the rate.
LINGER_PROMPT = 0
LINGER_LINGERING = 5
#: Seconds between the background thread's polls of an idle producer (no report
#: awaited): they serve the client's log lines and reports of publishes that gave up.
IDLE_POLL = 0.2
#: Longest single ``poll``: a poller looks at its deadline and at closing this often.
POLL_SLICE = 0.5
#: Seconds the background thread keeps polling after the last report nobody polls for
#: was due: ``workq.aio`` publishing one at a time then finds it polling, instead of
#: waking it for every publish.
BUSY_GRACE = 0.2
_FATAL_CODES = frozenset({KafkaError._FATAL, KafkaError._FENCED, KafkaError.PRODUCER_FENCED})
#: "prompt": one record at a time, sent at once (made at connect); "lingering": several
#: records at a time, batched by the client (made on first use).
_PATHS = ("prompt", "lingering")


def _path_for(records: Sequence[Record]) -> str:
    return "prompt" if len(records) == 1 else "lingering"


class Publisher:
    """Shared producers, one per path ("prompt" for one record, "lingering" for several).

    ``send`` blocks until every record has a delivery report, retrying failed records
    with backoff within ``publish_timeout`` in total, and raises ``PublishError`` naming
    the topic if they still fail. The caller polls the producer for its own reports,
    taking turns with other callers (:class:`_Turn`); ``send_async`` (``workq.aio``)
    produces on the event loop and a background thread per path serves its reports.
    A producer that failed fatally (for instance fenced after a broker outage) is
    replaced, so the next publish works on a fresh one.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._producers: dict[str, Producer] = {}
        self._broken: set[str] = set()
        self._closed = threading.Event()
        self._turns = {path: _Turn() for path in _PATHS}
        self._threads: dict[str, threading.Thread] = {}
        # Made now: a new client's first delivery waits for its start-up (connection,
        # idempotent producer id), half a second on Kafka 4, which would otherwise
        # fall on the first publish.
        self._get("prompt")

    def _config(self, path: str) -> dict[str, str | int]:
        conf = dict(self._settings.client_config())
        if "linger_ms" in self._settings.model_fields_set:
            linger = self._settings.linger_ms
        else:
            linger = LINGER_LINGERING if path == "lingering" else LINGER_PROMPT
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
        """The producer of ``path`` ("prompt" or "lingering"), new if it broke."""
        producer = self._producers.get(path)
        if producer is not None and not self._broken:
            return producer  # the common case, without the lock
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
                    # producer's poll held a publish's report back while it waited on
                    # the other producer (up to 25 ms a publish).
                    thread = threading.Thread(
                        target=self._serve, args=(path,), name=f"workq-kafka-dr-{path}", daemon=True
                    )
                    self._threads[path] = thread
                    thread.start()
            return producer

    def _serve(self, path: str) -> None:
        """Poll ``path``'s producer while reports nobody polls for are due; else now
        and then, when no caller is polling it."""
        turn = self._turns[path]
        wake = threading.Event()
        closed = self._closed
        while not closed.is_set():
            if turn.pending <= 0:
                turn.work.wait(IDLE_POLL)
                # Cleared before looking at ``pending`` again: a rise after this sets it.
                turn.work.clear()
            with self._lock:
                producer = self._producers[path]
            if turn.pending > 0:
                turn.serving = True
                try:
                    while not (closed.is_set() or turn.idle()):
                        with self._lock:
                            producer = self._producers[path]
                        self._poll_until(
                            turn,
                            producer,
                            wake,
                            lambda: closed.is_set() or turn.idle(),
                            time.monotonic() + POLL_SLICE,
                        )
                finally:
                    # Before ``pending`` is looked at again (the loop's top): a rise
                    # after this wakes the thread.
                    turn.serving = False
            elif turn.take(wake):
                try:
                    producer.poll(0)
                finally:
                    turn.give_up()
                    turn.leave(wake)

    def _poll_until(
        self,
        turn: _Turn,
        producer: Producer,
        wake: threading.Event,
        done: Callable[[], bool],
        deadline: float,
    ) -> bool:
        """Poll ``producer`` in turn with other callers until ``done()`` (True) or the
        deadline (False); while another caller polls, wait for ``wake``."""
        try:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if turn.take(wake):
                    try:
                        while not done():
                            left = deadline - time.monotonic()
                            if left <= 0:
                                return False
                            producer.poll(min(left, POLL_SLICE))
                    finally:
                        turn.give_up()
                else:
                    wake.wait(left)
                    # Woken by the last report (``done`` is then true) or by a hand-off.
                    wake.clear()
                    with turn.lock:
                        turn.waiters.discard(wake)
            return True
        finally:
            turn.leave(wake)

    def _note(self, path: str, err: KafkaError | None) -> None:
        if err is not None and (err.fatal() or err.code() in _FATAL_CODES):
            with self._lock:
                self._broken.add(path)

    def _fail(self, exc: _Failed, todo: Sequence[Record]) -> PublishError:
        failed = exc.failed
        record, reason = failed[0] if failed else (todo[0], str(exc))
        return PublishError(
            f"Kafka did not accept {len(failed) or len(todo)} message(s) for topic "
            f"{record.topic!r} at {self._settings.redacted_url()} within "
            f"publish_timeout={self._settings.publish_timeout}s: {reason}; check the "
            "broker is up and the topic exists, then publish again"
        )

    def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` and return once the broker has acknowledged all of them."""
        todo = list(records)
        path = _path_for(records)
        # publish_timeout bounds the whole call, retries included.
        deadline = Deadline(self._settings.publish_timeout)
        try:
            self._send_once(todo, path, deadline.at)
            return
        except _Failed as exc:
            first: _Failed | None = exc
            todo = [r for r, _ in exc.failed]
            log.warning("%d records failed, retrying: %s", len(todo), exc)
        try:
            for attempt in PUBLISH.retrying(
                _Failed,
                attempts=self._settings.publish_retries + 1,
                deadline=deadline,
                # A try with less than this left could not get its delivery reports.
                reserve=0.1,
            ):
                with attempt:
                    if first is not None:
                        # The first try ran above, outside tenacity (whose bookkeeping
                        # costs a single publish tens of microseconds): count it here.
                        failure, first = first, None
                        raise failure
                    try:
                        self._send_once(todo, path, deadline.at)
                    except _Failed as exc:
                        todo = [r for r, _ in exc.failed]
                        log.warning("%d records failed, retrying: %s", len(todo), exc)
                        raise
        except _Failed as exc:
            raise self._fail(exc, todo) from None

    def _send_once(self, records: Sequence[Record], path: str, deadline: float) -> None:
        batch = _Batch(len(records))
        producer = self._get(path)

        def note(err: KafkaError | None) -> None:
            self._note(path, err)

        for record in records:
            self._produce(producer, path, record, batch.report(record, note), deadline)
        if not self._poll_until(
            self._turns[path], producer, batch.wake, lambda: not batch.due, deadline
        ):
            raise _Failed([(records[0], "no delivery report in time")])
        if batch.failed:
            raise _Failed(batch.failed)

    async def send_async(self, records: Sequence[Record]) -> None:
        """The asyncio twin of :meth:`send`: records are produced on the event loop and
        the loop is woken by their reports (no executor thread in between)."""
        todo = list(records)
        path = _path_for(records)
        deadline = Deadline(self._settings.publish_timeout)
        try:
            await self._send_once_async(todo, path, deadline.at)
            return
        except _Failed as exc:
            first: _Failed | None = exc
            todo = [r for r, _ in exc.failed]
            log.warning("%d records failed, retrying: %s", len(todo), exc)
        try:
            async for attempt in PUBLISH.async_retrying(
                _Failed,
                attempts=self._settings.publish_retries + 1,
                deadline=deadline,
                reserve=0.1,
            ):
                with attempt:
                    if first is not None:
                        failure, first = first, None
                        raise failure
                    try:
                        await self._send_once_async(todo, path, deadline.at)
                    except _Failed as exc:
                        todo = [r for r, _ in exc.failed]
                        log.warning("%d records failed, retrying: %s", len(todo), exc)
                        raise
        except _Failed as exc:
            raise self._fail(exc, todo) from None

    async def _send_once_async(self, records: Sequence[Record], path: str, deadline: float) -> None:
        import asyncio  # here: sync programs never load asyncio

        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[tuple[Record, str]]] = loop.create_future()
        turn = self._turns[path]
        failed: list[tuple[Record, str]] = []
        due = [None] * len(records)  # popped by each report, as _Batch.due

        def finish() -> None:
            if not done.done():
                done.set_result(failed)

        def report(record: Record) -> Report:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                # Runs on the polling thread (see _Turn and _Batch).
                turn.settle()
                if err is not None:
                    self._note(path, err)
                    failed.append((record, str(err)))
                due.pop()
                if not due:
                    with contextlib.suppress(RuntimeError):  # the loop is closed
                        loop.call_soon_threadsafe(finish)

            return on_delivery

        producer = self._get(path)
        turn.add_pending(len(records))
        for i, record in enumerate(records):
            try:
                await self._produce_async(producer, path, record, report(record), deadline)
            except BaseException:
                # The rest are not produced: no report of theirs is due.
                for _ in records[i:]:
                    turn.settle()
                raise
        timer = loop.call_later(max(deadline - time.monotonic(), 0), finish)
        try:
            await done
        finally:
            timer.cancel()
        if due:
            raise _Failed([(records[0], "no delivery report in time")])
        if failed:
            raise _Failed(failed)

    async def _produce_async(
        self, producer: Producer, path: str, record: Record, on_delivery: Report, end: float
    ) -> None:
        import asyncio

        while True:
            try:
                self._produce_now(producer, path, record, on_delivery)
                return
            except BufferError:
                # The local queue is full: let reports drain it, without blocking the loop.
                if time.monotonic() > end:
                    raise _Failed([(record, "local producer queue stayed full")]) from None
                await asyncio.sleep(0.01)

    def produce(
        self,
        record: Record,
        on_delivery: Callable[[KafkaError | None, Message], None],
        deadline: float | None = None,
        path: str = "lingering",
    ) -> None:
        """Queue one record, nobody waiting for it; ``on_delivery`` runs on the thread
        polling its producer. ``path``: "lingering" (records queued together share a
        request) or "prompt" (sent at once, on the producer made at connect)."""
        end = (
            deadline if deadline is not None else time.monotonic() + self._settings.publish_timeout
        )
        turn = self._turns[path]

        def report(err: KafkaError | None, msg: Message) -> None:
            turn.settle()
            self._note(path, err)
            on_delivery(err, msg)

        turn.add_pending(1)
        try:
            self._produce(self._get(path), path, record, report, end)
        except BaseException:
            turn.settle()
            raise

    def _produce(
        self,
        producer: Producer,
        path: str,
        record: Record,
        on_delivery: Report,
        end: float,
    ) -> None:
        while True:
            try:
                self._produce_now(producer, path, record, on_delivery)
                return
            except BufferError:
                # The local queue is full: wait for reports to drain it.
                if time.monotonic() > end:
                    raise _Failed([(record, "local producer queue stayed full")]) from None
                time.sleep(0.01)

    def _produce_now(
        self, producer: Producer, path: str, record: Record, on_delivery: Report
    ) -> None:
        try:
            producer.produce(
                record.topic,
                value=record.value,
                key=record.key,
                headers=record.headers,
                on_delivery=on_delivery,
            )
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
