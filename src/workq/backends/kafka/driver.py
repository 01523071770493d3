"""``kafka://``: the workq driver on confluent-kafka.

Lanes are topics (see :mod:`.topics`); a queue's consumers form one consumer group.
Each consumer has a poll thread that owns the client consumer (:mod:`.receiver`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ...driver import (
    Capabilities,
    DeadLetter,
    Driver,
    LaneStats,
    Outgoing,
    QueueStats,
    Receiver,
)
from ...errors import BrokerUnavailable, ConfigurationError, PublishError
from ...lanes import Lane
from ...retrying import REQUEST, Deadline
from ...spec import QueueSpec
from .deadletters import dlq_reader, read_dead
from .groups import Groups
from .lanewatch import LaneWatch
from .logs import client_logger
from .notes import WorkNotes
from .producing import Publisher, Record, _Failed
from .receiver import LANE_REFRESH, KafkaReceiver
from .settings import KafkaSettings
from .sharing import ShareReceiver
from .sweep import IdleSweep
from .topics import Naming
from .wire import encode, to_record

if TYPE_CHECKING:
    from confluent_kafka.admin._metadata import ClusterMetadata

    from .aio import AsyncKafkaDriver

__all__ = ["KafkaDriver", "create_async_driver", "create_driver"]

log = logging.getLogger("workq.kafka")

#: Seconds between full topic listings of a consumer that reads no lane signals.
LIST_EVERY = 1.0
#: Seconds a signalled lane is kept beyond a listing that does not show it.
SIGNAL_GRACE = 5.0
#: Most topics listed per second on average by a consumer that reads lane signals: a
#: listing costs about 40 us of CPU per topic in the cluster (37 ms at 1,000 lane
#: topics), so in a larger cluster listings come less often than ``lane_sweep``.
LISTED_PER_SECOND = 40.0

#: Options a queue declaration may carry on Kafka, with their checks.
OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "partitions": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "replication_factor": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "ordering": (lambda v: v in ("none", "key"), "'none' or 'key'"),
    "key_header": (lambda v: isinstance(v, str) and bool(v), "a header name"),
}


def create_driver(settings: KafkaSettings) -> KafkaDriver:
    """Connect to the Kafka cluster named by ``settings``."""
    return KafkaDriver(settings)


async def create_async_driver(settings: KafkaSettings) -> AsyncKafkaDriver:
    """Connect to the Kafka cluster for ``workq.aio``."""
    import asyncio  # here: sync programs never load asyncio

    from .aio import AsyncKafkaDriver

    return AsyncKafkaDriver(await asyncio.to_thread(KafkaDriver, settings))


class KafkaDriver(Driver):
    """A connection to one Kafka cluster: an admin client and a shared producer."""

    capabilities = Capabilities(
        backend="kafka",
        lease_model="session",
        # Cheap: ``lanes`` answers from the last listing and the lane signals, and lists
        # the cluster only every ``lane_sweep`` (LIST_EVERY without signals).
        lane_refresh=LANE_REFRESH,
        receive_batch=500,
        # A partition's messages go to its one owner in the group (no share groups).
        shared_dispatch=False,
    )

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        if settings.mode == "share":
            # Any member of a share group takes any record.
            self.capabilities = dataclasses.replace(self.capabilities, shared_dispatch=True)
        self.naming = Naming(
            settings.group_prefix,
            suffixed=settings.default_lane == "suffixed",
            topic_prefix=settings.topic_prefix,
        )
        self._admin = AdminClient(dict(settings.client_config()), logger=client_logger())
        self._brokers = self._check_reachable()
        self._publisher = Publisher(settings)
        self._specs: dict[str, tuple[QueueSpec, bool]] = {}
        self._topics: set[str] = set()
        self._parsed: dict[str, dict[str, Lane | None]] = {}
        self._cluster_topics = 0  # topics in the last full listing
        # queue -> (monotonic time the listing began, its lanes)
        self._listed: dict[str, tuple[float, list[Lane]]] = {}
        self._watch: LaneWatch | None = None
        self._sweep: IdleSweep | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.notes = WorkNotes(self._publisher, self.naming, self._ensure_signal_topic)
        self.groups = Groups(self._admin, settings, self.naming, self._metadata)

    def _check_reachable(self) -> int:
        """How many brokers the cluster has; BrokerUnavailable if it does not answer."""
        try:
            meta = self._admin.list_topics(timeout=self.settings.connect_timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self.settings.redacted_url()} within "
                f"{self.settings.connect_timeout}s ({exc}); check the URL and that the "
                "brokers are up"
            ) from None
        return len(meta.brokers)

    def _replication(self, spec: QueueSpec) -> tuple[int, dict[str, str]]:
        """Replication factor and topic configs of new topics.

        Unless set: 3 replicas and ``min.insync.replicas=2`` when the cluster has 3 or
        more brokers (a confirmed message survives losing any one), else 1.
        """
        configured = spec.options.get("replication_factor", self.settings.replication_factor)
        replicas = int(configured) if configured is not None else (3 if self._brokers >= 3 else 1)
        configs = {"min.insync.replicas": "2"} if replicas >= 3 else {}
        return replicas, configs

    # -- queues and topics ---------------------------------------------------------

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        spec.check_options("kafka", OPTIONS)
        for name, value in spec.options.items():
            check, allowed = OPTIONS[name]
            if not check(value):
                raise ConfigurationError(
                    f"queue {spec.name!r}: option {name}={value!r} must be {allowed}"
                )
        with self._lock:
            known = self._specs.get(spec.name)
            if known is None or (known[1] and not implicit):
                self._specs[spec.name] = (spec, implicit)
            elif implicit:
                return known[0]
            else:
                known[0].check_same(spec)
                return known[0]
        self._ensure([self.naming.lane_topic(Lane(spec.name))], spec)
        return spec

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """The queue exists when its default lane's topic does (made by workq or not);
        its spec is the one this process knows, else the defaults (Kafka stores none)."""
        if self.naming.lane_topic(Lane(spec.name)) not in self._all_topics():
            return None
        return self._spec(spec)

    def _spec(self, spec: QueueSpec) -> QueueSpec:
        with self._lock:
            known = self._specs.get(spec.name)
        return known[0] if known else spec

    def _ensure(
        self, topics: Sequence[str], spec: QueueSpec, partitions: int | None = None
    ) -> dict[str, Lane]:
        """Create the topics that do not exist yet (idempotent across processes).

        Returns the lane topics this call made, other than the default lane's (which
        every consumer knows): the caller signals them once its records are sent.
        """
        missing = [t for t in topics if t not in self._topics]
        if not missing:
            return {}
        default = self.settings.partitions
        if self.settings.mode == "share" and "partitions" not in self.settings.model_fields_set:
            # A share group spreads one partition over every consumer; more partitions
            # only let a member acquire one record from each at a time.
            default = 1
        count = partitions or int(spec.options.get("partitions", default))
        replicas, configs = self._replication(spec)
        futures = self._admin.create_topics(
            [NewTopic(t, count, replicas, config=configs) for t in missing],
            request_timeout=self.settings.connect_timeout,
        )
        created = [topic for topic, future in futures.items() if self._created(topic, future)]
        with self._lock:
            self._topics.update(missing)
        default_lane = Lane(spec.name)
        lanes = {t: self.naming.lane_of(t, spec.name) for t in created}
        return {t: lane for t, lane in lanes.items() if lane is not None and lane != default_lane}

    def _send(self, spec: QueueSpec, records: Sequence[Record], new: dict[str, Lane]) -> None:
        """Send ``records``, then signal the lanes ``_ensure`` just made for them.

        After, not before: a consumer told of a topic subscribes at once, and a topic
        the group coordinator does not know yet waits for the member's next heartbeat
        (seconds) to be assigned; once a record is written, the brokers know the topic.
        """
        self.notes.write(spec, records, new)
        try:
            self._publisher.send(records)
        finally:
            if new:
                self._signal(spec, new)

    def _created(self, topic: str, future: Any) -> bool:
        """Whether a create_topics future made the topic (False: it existed already)."""
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise BrokerUnavailable(
                f"cannot create Kafka topic {topic!r} at {self.settings.redacted_url()}: "
                f"{exc}; check the broker and the client's permissions"
            ) from None
        return True

    def _ensure_signal_topic(self, spec: QueueSpec) -> str:
        """The queue's lane-signal topic, made if missing: one partition, compacted."""
        topic = self.naming.signal_topic(spec.name)
        if topic in self._topics:
            return topic
        replicas, configs = self._replication(spec)
        futures = self._admin.create_topics(
            [NewTopic(topic, 1, replicas, config={**configs, "cleanup.policy": "compact"})],
            request_timeout=self.settings.connect_timeout,
        )
        self._created(topic, futures[topic])
        with self._lock:
            self._topics.add(topic)
        return topic

    def _signal(self, spec: QueueSpec, new: dict[str, Lane]) -> None:
        """Write new lane topics' names to the queue's signal topic; best effort (the
        consumers' slower full listing finds a lane whose signal is lost)."""
        with self._lock:
            listed = self._listed.get(spec.name)
            if listed is not None:
                # This process's own consumers know at once.
                known = set(listed[1])
                listed[1].extend(lane for lane in new.values() if lane not in known)
                listed[1].sort(key=_lane_key)
        try:
            topic = self._ensure_signal_topic(spec)
            # Sent and waited for (a round trip, once per new lane): queued on the batch
            # producer it reached consumers up to 0.2 s later.
            self._publisher.send([Record(topic, b"", [], key=t.encode()) for t in new])
        except (BrokerUnavailable, PublishError) as exc:
            log.info("queue %r: could not signal new lanes %s: %s", spec.name, list(new), exc)

    def queues(self) -> list[str]:
        """The queues with lane or dead-letter topics (see ``Naming.queues``)."""
        return self.naming.queues(self._all_topics())

    def _all_topics(self) -> set[str]:
        return set(self._metadata().topics)

    def _metadata(self) -> ClusterMetadata:
        try:
            return self._admin.list_topics(timeout=self.settings.connect_timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot list topics at {self.settings.redacted_url()}: {exc}"
            ) from None

    def _lane_partitions(self, spec: QueueSpec) -> dict[Lane, list[int]]:
        """The queue's lanes and their partitions, from one metadata request."""
        found: dict[Lane, list[int]] = {}
        # Parsed once per topic: this runs every lane refresh over the whole cluster.
        known = self._parsed.setdefault(spec.name, {})
        topics = self._metadata().topics
        self._cluster_topics = len(topics)
        for topic, meta in topics.items():
            if topic in known:
                lane = known[topic]
            else:
                lane = known[topic] = self.naming.lane_of(topic, spec.name)
            if lane is not None:
                found[lane] = sorted(meta.partitions) if meta.error is None else []
        return dict(sorted(found.items(), key=lambda kv: _lane_key(kv[0])))

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        """The queue's lanes: the last listing and the lanes signalled since.

        The cluster is listed again every ``lane_sweep`` seconds (or ``LISTED_PER_SECOND``
        topics a second, if slower) when this process reads the queue's lane signals,
        else every ``LIST_EVERY``.
        """
        watch = self._watch
        watched = watch is not None and watch.watching(spec.name)
        every = (
            max(self.settings.lane_sweep, self._cluster_topics / LISTED_PER_SECOND)
            if watched
            else LIST_EVERY
        )
        with self._lock:
            listed = self._listed.get(spec.name)
        began = time.monotonic()
        if listed is None or began - listed[0] >= every:
            listed = (began, list(self._lane_partitions(spec)))
            with self._lock:
                self._listed[spec.name] = listed
            if watch is not None and watched:
                # Signals older than the listing by a margin: a broker's metadata may lag
                # a topic's creation a little, and a lane must not come and go.
                watch.forget(spec.name, before=began - SIGNAL_GRACE)
        lanes = list(listed[1])
        if watch is not None and watched:
            signalled = watch.lanes(spec.name)
            if signalled:
                known = set(lanes)
                extra = [lane for lane in signalled if lane not in known]
                if extra:
                    lanes = sorted([*lanes, *extra], key=_lane_key)
        return lanes

    # -- produce -------------------------------------------------------------------

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        spec, records = self._records(spec, messages)
        self._send(spec, records, self._ensure(sorted({r.topic for r in records}), spec))

    def _records(
        self, spec: QueueSpec, messages: Sequence[Outgoing]
    ) -> tuple[QueueSpec, list[Record]]:
        """The queue's known spec and the records of ``messages``."""
        spec = self._spec(spec)
        key_header = spec.options.get("key_header", "key")
        return spec, [encode(self.naming.lane_topic(m.lane), m, key_header) for m in messages]

    def _known(self, topics: Sequence[str]) -> bool:
        """Whether every topic is one this driver made or found (no admin call needed)."""
        return all(t in self._topics for t in topics)

    def _republish(self, spec: QueueSpec) -> Callable[[Sequence[Record]], None]:
        def send(records: Sequence[Record]) -> None:
            dlq = self.naming.dlq_topic(spec.name)
            new: dict[str, Lane] = {}
            for topic in {r.topic for r in records}:
                new.update(self._ensure([topic], spec, partitions=1 if topic == dlq else None))
            self._send(spec, records, new)

        return send

    def _bounce(self, record: Record, done: Callable[[bool], None]) -> None:
        try:
            self._publisher.produce(record, lambda err, msg: done(err is None))
        except _Failed:
            done(False)

    # -- consume -------------------------------------------------------------------

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        spec = self._spec(spec)
        if self.settings.mode == "share":
            limit = self.groups.configure_share_group(spec)
            return ShareReceiver(
                self.settings, self.naming, spec, prefetch, self._republish(spec), limit
            )
        protocol = self.groups.protocol()
        if protocol == "consumer":
            self.groups.configure_consumer_group(spec)
        receiver = KafkaReceiver(
            self.settings,
            self.naming,
            spec,
            prefetch,
            self._republish(spec),
            self._bounce,
            protocol=protocol,
        )
        self._watch_lanes(spec, receiver)
        return receiver

    def _watch_lanes(self, spec: QueueSpec, receiver: KafkaReceiver) -> None:
        """Have ``receiver`` told of the queue's new lanes (see :mod:`.lanewatch`)."""
        try:
            self._ensure_signal_topic(spec)
            with self._lock:
                if self._watch is None:
                    self._watch = LaneWatch(self.settings, self.naming)
                watch = self._watch
            watch.watch(spec.name, receiver.signal)
        except (BrokerUnavailable, KafkaException) as exc:
            log.warning(
                "queue %r: cannot read its lane signals (%s); new lanes are found by "
                "listing topics every %gs",
                spec.name,
                exc,
                LIST_EVERY,
            )
            return
        receiver.on_close(lambda: watch.unwatch(spec.name, receiver.signal))
        if self.settings.lane_idle > 0:
            with self._lock:
                if self._sweep is None:
                    self._sweep = IdleSweep(self.settings)
                sweep = self._sweep
            sweep.add(receiver)
            receiver.on_close(lambda: sweep.remove(receiver))
            receiver.notes_read()

    # -- dead letters ----------------------------------------------------------------

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        consumer = dlq_reader(self.settings, self.naming, self._all_topics(), spec)
        if consumer is None:
            return []
        try:
            found = read_dead(consumer, spec, limit, self.settings.connect_timeout)
        finally:
            consumer.close()
        return [DeadLetter.of(item, reason) for _, item, reason in found]

    def redrive(self, spec: QueueSpec) -> int:
        spec = self._spec(spec)
        consumer = dlq_reader(self.settings, self.naming, self._all_topics(), spec)
        if consumer is None:
            return 0
        moved = 0
        try:
            while True:
                found = read_dead(consumer, spec, 500, self.settings.connect_timeout)
                if not found:
                    return moved
                records = [
                    to_record(self.naming.lane_topic(item.lane), item, 1, None)
                    for _, item, _ in found
                ]
                self._send(spec, records, self._ensure(sorted({r.topic for r in records}), spec))
                # Recording how far redrive got is what hides these from dead_letters().
                last = TopicPartition(self.naming.dlq_topic(spec.name), 0, found[-1][0] + 1)
                for attempt in REQUEST.retrying(
                    KafkaException, deadline=Deadline(self.settings.publish_timeout)
                ):
                    with attempt:
                        consumer.commit(offsets=[last], asynchronous=False)
                moved += len(found)
                if len(found) < 500:
                    return moved
        finally:
            consumer.close()

    # -- stats -----------------------------------------------------------------------

    def stats(self, spec: QueueSpec) -> QueueStats:
        """Approximate depth from end offsets minus the group's committed offsets.

        Tansu reports end offsets per produced batch, so on it these are rough.
        """
        conf: dict[str, Any] = dict(self.settings.client_config())
        conf.update({"group.id": self.naming.group(spec.name), "enable.auto.commit": False})
        consumer = Consumer(conf)
        try:
            lanes = []
            for lane, partitions in self._lane_partitions(spec).items():
                topic = self.naming.lane_topic(lane)
                tps = [TopicPartition(topic, p) for p in partitions]
                committed = consumer.committed(tps, timeout=self.settings.connect_timeout)
                ready = 0
                for tp in committed:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition),
                        timeout=self.settings.connect_timeout,
                    )
                    ready += max(high - (tp.offset if tp.offset >= 0 else low), 0)
                lanes.append(LaneStats(lane, ready=ready, in_flight=0))
            dead = len(self.dead_letters(spec, 10_000))
        finally:
            consumer.close()
        return QueueStats(spec.name, lanes=lanes, dead_letters=dead)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.close()
        if self._sweep is not None:
            self._sweep.close()
        self._publisher.close()


def _lane_key(lane: Lane) -> tuple[int, str]:
    """Listing order: priority, then tenant (the default lane first)."""
    return (lane.priority, lane.tenant or "")
