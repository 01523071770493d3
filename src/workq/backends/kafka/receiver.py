"""The Kafka receiver: a poll thread owns the consumer; handlers never block it.

The poll thread subscribes, polls, buffers, pauses and resumes partitions, and commits.
``receive`` hands out from its buffers; ``ack``/``nack``/``dead_letter``/``release`` mark
offsets done (or give them back) under a lock, and the poll thread commits, per
partition, the highest offset below which every message is done.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from ...driver import Received, Receiver
from ...lanes import Lane
from ...spec import QueueSpec
from .idle import IdleParts
from .logs import client_logger
from .partitions import Part, PartKey, Token, flow, pick
from .producing import Record
from .records import Records
from .settings import KafkaSettings
from .topics import Naming

__all__ = ["KafkaReceiver", "Token"]

log = logging.getLogger("workq.kafka")

_seq = itertools.count()

#: Seconds between the core's lane listings (the driver's ``lane_refresh``): after a
#: new-lane signal, receives return by then, so the next one has the new lane.
LANE_REFRESH = 0.1
#: KIP-848: seconds after subscribing to new topics before subscribing again, and the
#: longest to keep doing so. A member's subscription change goes to the group
#: coordinator at once; if the coordinator has not seen a just-made topic yet, the
#: assignment waits for the member's next heartbeat (5 s apart by default). Subscribing
#: again sends another heartbeat at once.
NUDGE_EVERY = 0.3
NUDGE_FOR = 3.0
#: Seconds the poll thread waits in the client for records while records come, and
#: once none have come for ``lane_idle`` (its partitions asleep or quiet; it then asks
#: for one record, so a record is returned at once): each return
#: costs CPU growing with the partitions assigned, and an idle consumer of 3,000 came
#: back 40 times a second. The longer wait delays by as much what the poll thread does
#: between waits for an idle consumer: waking a lane on a work note, subscribing to a
#: new lane, closing.
POLL_WAIT = 0.05
IDLE_WAIT = 0.2


class KafkaReceiver(Receiver):
    """One consumer of one queue, in the queue's consumer group."""

    def __init__(
        self,
        settings: KafkaSettings,
        naming: Naming,
        spec: QueueSpec,
        prefetch: int,
        republish: Callable[[Sequence[Record]], None],
        bounce: Callable[[Record, Callable[[bool], None]], None],
        protocol: str = "classic",
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._records = Records(naming, spec, republish)
        self._bound = prefetch + settings.buffer
        self._ordered = spec.options.get("ordering", "none") == "key"
        self._bounce = bounce
        # A plain Lock, taken once per ack: ``with lock`` runs in C.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._revoking = False  # a revoke callback waits for handed-out work to settle
        self._parts: dict[PartKey, Part] = {}
        self._generations = itertools.count(1)
        self._delayed: list[tuple[float, int, Received, float]] = []  # (wake, seq, item, due)
        self._topics: frozenset[str] = frozenset()
        self._lanes: list[Lane] = []  # the last receive's lanes, and their topics
        self._lane_topics: frozenset[str] = frozenset()
        self._subscribed: frozenset[str] | None = None
        # Bumped (under the lock) whenever what ``_pick`` looks at changes, so a waiting
        # receive re-plans only then: with a thousand lanes a plan is not free.
        self._version = 0
        self._flow_due = False  # held counts or buffers changed since the last _flow
        self._commit_due = False
        self._next_commit = 0.0  # monotonic time before which no asynchronous commit
        self._closing = False
        self._closed = False
        # A new lane was signalled: receives return by this monotonic time, when the
        # core lists the lanes again (it lists at most every LANE_REFRESH).
        self._relist_until = 0.0
        self._signals = 0  # new-lane signals so far
        self._receive_at = 0.0  # when the last receive began (the core listed just before)
        self._on_close: list[Callable[[], None]] = []
        # Off until the driver has this receiver read work notes (``notes_read``).
        self._idle = IdleParts(0.0)
        conf: dict[str, Any] = dict(settings.client_config())
        conf.update(
            {
                "group.id": naming.group(spec.name),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # A work queue starts at the oldest unprocessed message, never the end.
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": settings.fetch_wait_ms,
                "queued.max.messages.kbytes": 16384,
                # Each refresh names every subscribed topic: every 5 s it cost an idle
                # consumer of 1,000 lane topics more CPU than all else. Partitions added
                # to a lane topic are seen within a minute; leader changes at once (an
                # error triggers a refresh).
                "topic.metadata.refresh.interval.ms": 60000,
            }
        )
        self._incremental = protocol == "consumer"
        # (first nudge at, give up at, topics not yet assigned) after a subscription grew
        self._awaiting: tuple[float, float, set[str]] | None = None
        if protocol == "consumer":
            # The broker assigns (always incrementally) and owns the session timeout.
            conf["group.protocol"] = "consumer"
        else:
            conf["partition.assignment.strategy"] = "cooperative-sticky"
            conf["session.timeout.ms"] = settings.session_timeout_ms
        self._consumer = Consumer(conf, logger=client_logger())
        self._thread = threading.Thread(
            target=self._run, name=f"workq-kafka-poll-{spec.name}", daemon=True
        )
        self._thread.start()

    # -- the handler side --------------------------------------------------------

    def buffered(self, lanes: Sequence[Lane], max_count: int) -> list[Received]:
        """What the poll thread has buffered for ``lanes``, taken without waiting (only
        the receiver's lock: an event loop's call, ``workq.aio``); ``[]`` if nothing.

        Only for one lane: with several, a receive that may wait holds back a lower
        lane's messages while a higher one has not reported (``partitions.pick``); with
        one there is nothing to hold back for, so waiting 0 picks the same.
        """
        if len(lanes) != 1:
            return []
        return self.receive(lanes, max_count, 0.0)

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        # The same lanes as last time, almost always: comparing them is cheaper than
        # naming a thousand lanes' topics again on every receive.
        if lanes != self._lanes:
            self._lanes = list(lanes)
            self._lane_topics = self._records.topics(lanes)
        topics = self._lane_topics
        deadline = time.monotonic() + timeout
        with self._cond:
            # Shortly after a new-lane signal, end early: the core then lists the lanes
            # again (once LANE_REFRESH has passed since its last listing).
            self._receive_at = time.monotonic()
            if self._relist_until > self._receive_at:
                deadline = min(deadline, self._relist_until)
            signals = self._signals
            if topics != self._topics:
                self._topics = topics
                self._cond.notify_all()
            planned = -1  # the state version the last plan saw
            held_back = False
            while True:
                if self._closed:
                    return []
                final = time.monotonic() >= deadline
                if planned != self._version or (final and held_back):
                    planned = self._version
                    items, held_back = self._pick(lanes, max_count, final)
                    if items:
                        return items
                if final:
                    return []
                if self._signals != signals:
                    signals = self._signals
                    deadline = time.monotonic()  # signalled while waiting: return now
                    continue
                self._cond.wait(min(deadline - time.monotonic(), 0.1))

    def signal(self, topic: str, new: bool) -> None:
        """The lane watch read a note for lane topic ``topic``: ``new`` if the topic was
        just made (the lanes changed), else a producer wrote records to it."""
        if new:
            self.lanes_changed()
        else:
            with self._cond:
                self._idle.noted(topic)

    def notes_read(self) -> None:
        """Work notes reach this receiver from now on: idle partitions may sleep."""
        with self._cond:
            self._idle.after = self._settings.lane_idle

    def lanes_changed(self) -> None:
        """A new lane of the queue exists: end a waiting receive, and for a moment every
        receive early, so the core lists lanes again soon (see :mod:`.lanewatch`)."""
        with self._cond:
            # The core lists again once LANE_REFRESH has passed since its last listing,
            # which came before the last receive began.
            self._relist_until = max(time.monotonic(), self._receive_at + LANE_REFRESH + 0.02)
            self._signals += 1
            self._cond.notify_all()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the receiver closes."""
        self._on_close.append(callback)

    def _changed(self) -> None:
        """What a receive plans from changed (under the lock): wake it to plan again."""
        self._version += 1
        self._flow_due = True
        self._cond.notify_all()

    def _pick(
        self, lanes: Sequence[Lane], max_count: int, final: bool
    ) -> tuple[list[Received], bool]:
        items, held_back = pick(self._parts.values(), lanes, max_count, final, self._ordered)
        if items:
            self._flow_due = True  # a drained partition may fetch again
        return items, held_back

    def _settled(self, item: Received, done: bool) -> Part | None:
        """Forget a handed-out delivery; mark its offset done if ``done``. Under the lock."""
        token: Token = item.token
        part = self._parts.get(token.part)
        if part is None or part.generation != token.generation:
            log.info(
                "delivery %s: partition %s was reassigned; its new owner gets it again",
                item.id,
                token.part,
            )
            return None
        part.out.discard(token.offset)
        self._flow_due = True
        if done:
            part.done.add(token.offset)
            self._commit_due = True
        if self._ordered and token.key is not None:
            part.busy_keys[token.key] -= 1
            self._changed()  # the key's next message may go out now
        elif self._revoking:
            self._cond.notify_all()
        return part

    def ack(self, item: Received) -> None:
        with self._lock:
            self._settled(item, done=True)

    def nack(self, item: Received, delay: float | None) -> None:
        # The retry goes to the end of the lane, so the partition is never held up by it.
        self._records.retry(item, delay)
        self.ack(item)

    def dead_letter(self, item: Received, reason: str) -> None:
        self._records.dead_letter(item, reason)
        self.ack(item)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: the poll thread keeps the group session alive."""

    def release(self, items: Sequence[Received]) -> None:
        with self._cond:
            for item in items:
                part = self._settled(item, done=False)
                if part is not None:
                    part.put_back(item)
            self._changed()

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        for callback in self._on_close:
            callback()
        if self._thread is not threading.current_thread():
            self._thread.join(self._settings.revoke_timeout + 30)

    # -- the poll thread -----------------------------------------------------------

    def _run(self) -> None:
        last_record = time.monotonic()
        # Quiet after lane_idle without records (5 s when idle partitions never sleep),
        # never while delayed records wait to be handed out on time.
        idle_after = self._settings.lane_idle or 5.0
        try:
            while True:
                with self._cond:
                    if self._closing:
                        break
                    topics = self._topics
                if topics != self._subscribed:
                    self._subscribe(topics)
                elif self._awaiting is not None:
                    self._nudge()
                quiet = not self._delayed and time.monotonic() - last_record > idle_after
                # Quiet, it asks for one record: the client returns a batch only when it
                # is full or the wait is over, and the first record must not wait.
                messages = (
                    self._consumer.consume(1, IDLE_WAIT)
                    if quiet
                    else self._consumer.consume(self._settings.poll_batch, POLL_WAIT)
                )
                # Decode before taking the lock, so handlers settling meanwhile are not
                # held up; only this thread changes the partition table and offsets.
                fetched = [f for f in map(self._on_message, messages) if f is not None]
                now = time.monotonic()
                if messages:
                    last_record = now
                with self._cond:
                    for part, item, not_before in fetched:
                        part.active_at = now
                        self._buffer(part, item, not_before)
                    self._wake_delayed()
                    if messages:  # deliveries, or ends of partitions: both change plans
                        self._changed()
                    pause, resume = self._flow() if self._flow_due else ([], [])
                    sleep, wake = self._idle.due(self._parts.values(), now)
                    offsets = self._offsets() if self._commit_now() else []
                if pause or resume or sleep or wake:
                    self._apply_flow(pause + _tps(sleep), resume + _tps(wake, resume=True))
                self._commit(offsets, asynchronous=True)
        except Exception:
            log.exception("Kafka consumer of queue %r failed", self._spec.name)
        finally:
            self._shutdown()

    def _commit_now(self) -> bool:
        """Whether done offsets wait and ``commit_interval`` has passed (under the lock)."""
        if not self._commit_due or time.monotonic() < self._next_commit:
            return False
        self._next_commit = time.monotonic() + self._settings.commit_interval
        return True

    def _nudge(self) -> None:
        """Subscribe again while new topics stay unassigned (KIP-848; see NUDGE_EVERY)."""
        assert self._awaiting is not None
        at, until, waiting = self._awaiting
        now = time.monotonic()
        with self._cond:
            waiting.difference_update(topic for topic, _ in self._parts)
        if not waiting or now >= until:
            # All assigned, or another member has them.
            self._awaiting = None
        elif now >= at and self._subscribed:
            self._awaiting = (now + NUDGE_EVERY, until, waiting)
            self._subscribe(self._subscribed)

    def _subscribe(self, topics: frozenset[str]) -> None:
        if self._incremental and self._subscribed and topics - self._subscribed:
            now = time.monotonic()
            self._awaiting = (now + NUDGE_EVERY, now + NUDGE_FOR, set(topics - self._subscribed))
        if topics:
            self._consumer.subscribe(
                sorted(topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        else:
            self._consumer.unsubscribe()
        self._subscribed = topics

    def _on_message(self, message: KafkaMessage) -> tuple[Part, Received, float | None] | None:
        """Decode one fetched message for ``_buffer``; None if there is nothing to buffer.

        Runs without the lock: ``eof`` is only a hint to ``receive``, read under it.
        """
        error = message.error()
        key = (message.topic() or "", message.partition() or 0)
        part = self._parts.get(key)
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF and part is not None:
                part.eof = True
                part.end_seen = message.offset()
            self._records.fetch_error(error)
            return None
        offset = message.offset()
        if part is None or offset is None:
            return None
        if part.next_offset is not None and offset < part.next_offset:
            return None  # already fetched in this assignment (a seek back after pause)
        part.eof = False
        part.next_offset = offset + 1
        part.pending.append(offset)
        token = Token(key, offset, part.generation, message.key())
        item, not_before = self._records.delivery(message, part.lane, token)
        return part, item, not_before

    def _buffer(self, part: Part, item: Received, not_before: float | None) -> None:
        """Make a fetched delivery available, or hold it until it is due. Under the lock."""
        if not_before is not None:
            now = time.time()
            if not_before > now:
                wake = min(not_before, now + self._settings.delay_hold)
                heapq.heappush(self._delayed, (wake, next(_seq), item, not_before))
                return
        part.buffer.append(item)

    def _wake_delayed(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item, due = heapq.heappop(self._delayed)
            token: Token = item.token
            part = self._parts.get(token.part)
            if part is None or part.generation != token.generation:
                continue
            if due <= now:
                part.put_back(item)
                self._changed()
            else:
                # Still not due: send it round again so this partition's commits move on.
                record = self._records.again(item, item.attempt, due)
                self._bounce(record, functools.partial(self._bounced, item, due))

    def _bounced(self, item: Received, due: float, ok: bool) -> None:
        with self._cond:
            token: Token = item.token
            part = self._parts.get(token.part)
            if part is None or part.generation != token.generation:
                return
            if ok:
                part.done.add(token.offset)
                self._commit_due = True
            else:
                # Try the bounce again in a second; the message stays due when it was.
                wake = min(time.time() + 1.0, due)
                heapq.heappush(self._delayed, (wake, next(_seq), item, due))

    def _flow(self) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Partitions to pause and to resume (under the lock); see :func:`.partitions.flow`."""
        self._flow_due = False
        pause, resume = flow(self._parts.values(), self._bound)
        if pause or resume:
            self._version += 1  # paused partitions are no longer waited for, and back
        return _tps(pause), _tps(resume, resume=True)

    def sleeping(self) -> list[tuple[PartKey, int | None]]:
        """The partitions asleep as idle, each with where its fetching stopped."""
        with self._cond:
            return [(p.key, p.resume_at()) for p in self._parts.values() if p.asleep]

    def wake(self, keys: Iterable[PartKey]) -> None:
        """Fetch these sleeping partitions again: records were written past their stop."""
        with self._cond:
            self._idle.moved(keys)

    def _apply_flow(self, pause: list[TopicPartition], resume: list[TopicPartition]) -> None:
        try:
            if pause:
                self._consumer.pause(pause)
            if resume:
                self._consumer.resume(resume)
                # librdkafka starts fetching a resumed partition only at its broker
                # thread's next wake-up, up to a second later; a seek to the same place
                # wakes it now. (A partition with nothing fetched yet has no place.)
                for tp in resume:
                    if tp.offset >= 0:
                        self._consumer.seek(tp)
        except KafkaException as exc:
            log.warning("pause/resume on queue %r failed: %s", self._spec.name, exc)

    def _offsets(self, keys: Sequence[PartKey] | None = None) -> list[TopicPartition]:
        """Offsets to commit (under the lock): each partition's contiguous done point."""
        self._commit_due = False
        offsets = []
        for key in keys if keys is not None else list(self._parts):
            part = self._parts.get(key)
            if part is None:
                continue
            point = part.commit_point()
            if point is not None and point != part.committed:
                part.committed = point
                offsets.append(TopicPartition(key[0], key[1], point))
        return offsets

    def _commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            # Two calls, not one with ``asynchronous=asynchronous``: the client's types
            # overload ``commit`` on the literal (None back when asynchronous).
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("committing offsets of queue %r failed: %s", self._spec.name, exc)

    # -- rebalance callbacks (on the poll thread, inside consume) -------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._cond:
            for tp in partitions:
                lane = self._records.lane_of(tp.topic)
                if lane is None:
                    continue
                key = (tp.topic, tp.partition)
                part = Part(key, lane, next(self._generations), active_at=time.monotonic())
                self._parts[key] = part
            self._changed()
        self._assign_at_committed(consumer, partitions)

    def _assign_at_committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Assign at the committed offsets, looked up here; a partition with none at 0;
        and resume them all.

        Left to librdkafka, a partition with no committed offset (a new lane's) waits for
        an offset query it sends about 0.1 s later, a good part of a new tenant's first
        delivery. Offset 0 where the log no longer starts at 0 is out of range, and
        ``auto.offset.reset`` (earliest) applies as before. If the lookup fails, they are
        assigned without offsets and librdkafka looks them up itself.

        Resumed because librdkafka keeps a partition's pause across a revoke and a later
        assignment back to this consumer: one paused as idle or for flow when it was
        taken away would never be fetched again, its new ``Part`` not knowing.
        """
        assigned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            committed = consumer.committed(partitions, timeout=self._settings.connect_timeout)
            if not any(tp.error is not None for tp in committed):
                assigned = [
                    TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in committed
                ]
        except KafkaException as exc:
            log.info("queue %r: committed offsets not read (%s)", self._spec.name, exc)
        consumer.incremental_assign(assigned)
        consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in assigned])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = time.monotonic() + self._settings.revoke_timeout
        with self._cond:
            # Let handed-out work of these partitions finish, within a bound.
            self._revoking = True
            while any(self._parts[k].out for k in keys if k in self._parts):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "queue %r: partitions revoked with deliveries still being handled; "
                        "the new owner gets them again",
                        self._spec.name,
                    )
                    break
                self._cond.wait(min(remaining, 0.05))
            self._revoking = False
            offsets = self._offsets(keys)
        self._commit(offsets, asynchronous=False)
        self._drop(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop([(tp.topic, tp.partition) for tp in partitions])

    def _drop(self, keys: Sequence[PartKey]) -> None:
        with self._cond:
            for key in keys:
                self._parts.pop(key, None)
            self._changed()

    def _shutdown(self) -> None:
        with self._cond:
            offsets = self._offsets()
        try:
            self._commit(offsets, asynchronous=False)
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the Kafka consumer of queue %r: %s", self._spec.name, exc)
        with self._cond:
            self._closed = True
            self._parts.clear()
            self._changed()


def _tps(parts: Sequence[Part], resume: bool = False) -> list[TopicPartition]:
    """The client's names of ``parts``; to ``resume``, with where fetching goes on."""
    if not resume:
        return [TopicPartition(*p.key) for p in parts]
    return [
        TopicPartition(*p.key, offset if (offset := p.resume_at()) is not None else OFFSET_INVALID)
        for p in parts
    ]
