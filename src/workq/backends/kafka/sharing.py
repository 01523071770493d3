"""The share-group receiver (``kafka://...?mode=share``, KIP-932, client preview).

Any member of a queue's share group takes any ready record; the broker locks each
acquired record for the group's lock duration and counts its deliveries. The client's
share consumer is not thread-safe and, in explicit acknowledgement mode, must have every
record of one poll acknowledged before it polls again. So one poll thread owns a few
share consumers (``share_members``, at most ``prefetch``), each polling only when its
last batch is settled; handlers' acks are queued to that thread. Each member fetches
one producer batch at a time (``max.partition.fetch.bytes=1``) and share-mode
producers write one record per batch, so a member acquires one record per poll: what a
consumer holds stays near ``prefetch`` and idle consumers are never starved by a busy
one holding a whole batch.

Outcomes: ack → ACCEPT; nack now → RELEASE (the broker's delivery count is the
attempt); nack with a delay → re-publish with not-before, then ACCEPT; dead letter →
produce to the DLQ topic, then ACCEPT; release (close, stop) → RELEASE. No lock renewal
(the client has no RENEW yet): a handler longer than the lock
(``share_lock_timeout``) may see its message delivered again elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import AcknowledgeType, KafkaException, ShareConsumer
from confluent_kafka import Message as KafkaMessage

from ...driver import Received, Receiver
from ...lanes import Lane
from ...spec import QueueSpec
from .logs import client_logger
from .producing import Record
from .records import Records
from .settings import KafkaSettings
from .topics import Naming

__all__ = ["ShareReceiver", "ShareToken"]

log = logging.getLogger("workq.kafka")

#: Seconds after the last receive() during which members still acquire records, and
#: after which records acquired but not asked for are released.
IDLE = 1.0


class ShareToken(NamedTuple):
    """Which member acquired a delivery, the client's message, and its delivery count."""

    member: int
    message: KafkaMessage
    deliveries: int
    key: bytes | None


@dataclass(slots=True)
class _Member:
    consumer: ShareConsumer
    outstanding: int = 0  # records of the last poll not yet acknowledged
    acked: bool = False  # acknowledgements not yet committed
    acks: list[tuple[KafkaMessage, AcknowledgeType]] = field(default_factory=list)


class ShareReceiver(Receiver):
    """One consumer of one queue, as members of the queue's share group."""

    def __init__(
        self,
        settings: KafkaSettings,
        naming: Naming,
        spec: QueueSpec,
        prefetch: int,
        republish: Callable[[Sequence[Record]], None],
        delivery_limit: int,
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._records = Records(naming, spec, republish)
        # RELEASE past the broker's delivery limit would archive the record (lost to
        # us): from there on a retry is re-published instead.
        self._delivery_limit = delivery_limit
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._buffer: list[Received] = []  # acquired, not handed out
        self._delayed: list[
            tuple[float, Received, float]
        ] = []  # (hand out or bounce at, item, due)
        self._topics: frozenset[str] = frozenset()
        self._subscribed: frozenset[str] | None = None
        self._closing = False
        self._draining = False
        # Demand: members acquire records only for a receive() that wants them, so that
        # records are not held while the core is full or stopping.
        self._receiving = 0
        self._wanted = 0
        self._demand_at = time.monotonic()
        self._closed = False
        conf: dict[str, Any] = dict(settings.client_config())
        conf.update(
            {
                "group.id": naming.share_group(spec.name),
                "share.acknowledgement.mode": "explicit",
                # One producer batch per fetch: with share-mode producers that is one
                # record, so a member holds one record at a time.
                "fetch.max.bytes": 1,
                "max.partition.fetch.bytes": 1,
                "fetch.wait.max.ms": 100,
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "topic.metadata.refresh.interval.ms": 5000,
            }
        )
        count = max(1, min(prefetch, settings.share_members))
        self._members = [_Member(ShareConsumer(conf, logger=client_logger())) for _ in range(count)]
        self._thread = threading.Thread(
            target=self._run, name=f"workq-kafka-share-{spec.name}", daemon=True
        )
        self._thread.start()

    # -- the handler side --------------------------------------------------------

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        topics = self._records.topics(lanes)
        deadline = time.monotonic() + timeout
        with self._cond:
            if topics != self._topics:
                self._topics = topics
                self._cond.notify_all()
            self._receiving += 1
            self._wanted = max_count
            try:
                while True:
                    self._demand_at = time.monotonic()
                    if self._closed:
                        return []
                    items = self._pick(lanes, max_count)
                    remaining = deadline - time.monotonic()
                    if items or remaining <= 0:
                        return items
                    self._cond.wait(min(remaining, 0.1))
            finally:
                self._receiving -= 1
                self._demand_at = time.monotonic()

    def _pick(self, lanes: Sequence[Lane], max_count: int) -> list[Received]:
        """The buffered deliveries of ``lanes``, best lane first (under the lock)."""
        rank = {lane: i for i, lane in enumerate(lanes)}
        ready = sorted(
            (item for item in self._buffer if item.lane in rank), key=lambda i: rank[i.lane]
        )[:max_count]
        taken = {id(item) for item in ready}
        self._buffer = [item for item in self._buffer if id(item) not in taken]
        return ready

    def _settle(self, item: Received, kind: AcknowledgeType) -> None:
        token: ShareToken = item.token
        with self._cond:
            member = self._members[token.member]
            member.acks.append((token.message, kind))
            self._cond.notify_all()

    def ack(self, item: Received) -> None:
        self._settle(item, AcknowledgeType.ACCEPT)

    def nack(self, item: Received, delay: float | None) -> None:
        token: ShareToken = item.token
        if not delay and token.deliveries + 1 < self._delivery_limit:
            self._settle(item, AcknowledgeType.RELEASE)
            return
        self._records.retry(item, delay)
        self._settle(item, AcknowledgeType.ACCEPT)

    def dead_letter(self, item: Received, reason: str) -> None:
        self._records.dead_letter(item, reason)
        self._settle(item, AcknowledgeType.ACCEPT)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: the client cannot renew acquisition locks yet (KIP-1222)."""

    def release(self, items: Sequence[Received]) -> None:
        # The core releases only when the consumer stops: poll no more, or the members
        # would acquire the released records again at once and hold them until closed.
        with self._cond:
            self._draining = True
            items = [*items, *self._buffer]
            self._buffer.clear()
        for item in items:
            self._settle(item, AcknowledgeType.RELEASE)

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(30)

    # -- the poll thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closing:
                        break
                    topics = self._topics
                    work = [(m, m.acks) for m in self._members if m.acks]
                    for member, _ in work:
                        member.acks = []
                    due = self._due()
                if topics != self._subscribed:
                    self._subscribe(topics)
                for member, acks in work:
                    self._acknowledge(member, acks)
                for item, not_before in due:
                    self._bounce(item, not_before)
                self._release_idle()
                if not self._poll_free():
                    with self._cond:
                        if not self._closing and not any(m.acks for m in self._members):
                            self._cond.wait(0.02)
        except Exception:
            log.exception("Kafka share consumer of queue %r failed", self._spec.name)
        finally:
            self._shutdown()

    def _subscribe(self, topics: frozenset[str]) -> None:
        for member in self._members:
            if topics:
                member.consumer.subscribe(sorted(topics))
            else:
                member.consumer.unsubscribe()
        self._subscribed = topics

    def _acknowledge(
        self, member: _Member, acks: list[tuple[KafkaMessage, AcknowledgeType]]
    ) -> None:
        for message, kind in acks:
            try:
                member.consumer.acknowledge(message, kind)
            except Exception as exc:  # the lock expired, or the member lost it
                log.info(
                    "queue %r: acknowledging %s[%s]@%s failed (%s); the broker has given it "
                    "to another consumer or will",
                    self._spec.name,
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    exc,
                )
            member.outstanding -= 1
            member.acked = True
        if member.outstanding <= 0:
            member.outstanding = 0
            self._commit(member)

    def _commit(self, member: _Member) -> None:
        if not member.acked:
            return
        member.acked = False
        try:
            if self._draining:
                # Released records must reach the broker now, for other consumers.
                member.consumer.commit_sync(self._settings.connect_timeout)
            else:
                member.consumer.commit_async()
        except KafkaException as exc:
            log.warning("queue %r: committing acknowledgements failed: %s", self._spec.name, exc)

    def _release_idle(self) -> None:
        """Give back acquired records nobody has asked for in ``IDLE`` seconds (the core
        is full, or stopping): held here they would wait for their lock to expire."""
        with self._cond:
            if self._receiving or not self._buffer:
                return
            if time.monotonic() - self._demand_at < IDLE:
                return
            idle, self._buffer = self._buffer, []
            for item in idle:
                token: ShareToken = item.token
                self._members[token.member].acks.append((token.message, AcknowledgeType.RELEASE))

    def _poll_free(self) -> bool:
        """Poll the members whose last batch is settled; True if any record came."""
        got = False
        if not self._subscribed or self._draining:
            return False
        with self._cond:
            recent = self._receiving or time.monotonic() - self._demand_at < IDLE
            budget = self._wanted - len(self._buffer) if recent else 0
        for index, member in enumerate(self._members):
            if member.outstanding:
                continue
            if budget <= 0:
                break
            budget -= 1
            try:
                messages = member.consumer.poll(0.02)
            except KafkaException as exc:
                log.warning("queue %r: share poll failed: %s", self._spec.name, exc)
                continue
            fresh: list[Received] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    self._records.fetch_error(error)
                    continue
                member.outstanding += 1
                item = self._decode(index, message)
                if item is not None:
                    fresh.append(item)
            if fresh:
                got = True
                with self._cond:
                    self._buffer.extend(fresh)
                    self._cond.notify_all()
        return got

    def _decode(self, index: int, message: KafkaMessage) -> Received | None:
        lane = self._records.lane_of(message.topic() or "")
        if lane is None:
            with self._cond:
                self._members[index].acks.append((message, AcknowledgeType.RELEASE))
            return None
        deliveries = message.delivery_count() or 1
        token = ShareToken(index, message, deliveries, message.key())
        item, not_before = self._records.delivery(message, lane, token)
        # The header counts deliveries before this record was (re-)published; the
        # broker counts this record's own.
        item.attempt += deliveries - 1
        if not_before is not None and not_before > time.time():
            # A held record keeps its member from polling: hold briefly, then send it
            # round again with the same not-before.
            hold = min(not_before, time.time() + min(self._settings.delay_hold, 1.0))
            with self._cond:
                self._delayed.append((hold, item, not_before))
            return None
        return item

    def _due(self) -> list[tuple[Received, float]]:
        """Held not-yet-due records whose hold is over (under the lock)."""
        now = time.time()
        out = []
        kept = []
        for hold, item, not_before in self._delayed:
            if hold > now:
                kept.append((hold, item, not_before))
            elif not_before <= now:
                self._buffer.append(item)
                self._cond.notify_all()
            else:
                out.append((item, not_before))
        self._delayed = kept
        return out

    def _bounce(self, item: Received, not_before: float) -> None:
        token: ShareToken = item.token
        try:
            self._records.republish([self._records.again(item, item.attempt, not_before)])
        except Exception as exc:
            log.warning(
                "queue %r: re-publishing a delayed message failed: %s", self._spec.name, exc
            )
            kind = AcknowledgeType.RELEASE
        else:
            kind = AcknowledgeType.ACCEPT
        with self._cond:
            self._members[token.member].acks.append((token.message, kind))

    def _shutdown(self) -> None:
        with self._cond:
            for item in self._buffer:
                token: ShareToken = item.token
                self._members[token.member].acks.append((token.message, AcknowledgeType.RELEASE))
            for _, item, _ in self._delayed:
                token = item.token
                self._members[token.member].acks.append((token.message, AcknowledgeType.RELEASE))
            self._buffer.clear()
            self._delayed.clear()
            work = [(m, m.acks) for m in self._members]
            for member in self._members:
                member.acks = []
        for member, acks in work:
            try:
                for message, kind in acks:
                    member.consumer.acknowledge(message, kind)
                # Closing commits what is acknowledged and gives back what is not.
                member.consumer.close()
            except (KafkaException, RuntimeError, ValueError) as exc:
                log.warning("closing a Kafka share consumer of %r: %s", self._spec.name, exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
