"""New-lane signals: how a consumer hears of a new tenant's lane without listing topics.

Listing the cluster's topics is the only way Kafka offers to find topics nobody named,
and it costs a metadata request naming every topic, so a consumer with ``tenants=None``
cannot afford it often. Instead, a workq producer that creates a lane topic also writes
its name to the queue's lane-signal topic (``<queue>.lanes``: one partition, compacted,
keyed by the lane topic). Each process that consumes the queue reads that partition
(no consumer group: every process must see every signal) with a long-poll fetch, which
returns as soon as a signal is written, and tells its receivers; they return from a
waiting receive so the core asks for the lanes again, which now include the new one.

The full listing stays as a slower sweep (``lane_sweep``): it finds lane topics made by
plain clients or older workq versions, and forgets signalled lanes whose topic is gone.

The same topic carries work notes (value ``w``): a lane topic got records, so receivers
resume its partitions if they had stopped fetching them as idle (see :mod:`.idle`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ...lanes import Lane
from .idle import WORK
from .logs import client_logger
from .settings import KafkaSettings
from .topics import Naming

__all__ = ["LaneWatch", "Listener"]

#: Told of each note: the lane topic, and whether it is new (else it has new records).
Listener = Callable[[str, bool], None]

log = logging.getLogger("workq.kafka")

#: Longest the watch's fetch waits at the broker: an idle watch sends this many
#: requests a second at most, for one partition per queue, whatever the tenant count.
FETCH_WAIT_MS = 1000


class _Assign:
    """A queue's signal topic for the watch's thread to start reading at its end."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.done = threading.Event()
        self.error: KafkaException | None = None


class LaneWatch:
    """One reader of the lane-signal topics of the queues a driver consumes.

    Args:
        settings: The connection's settings.
        naming: Topic names.
    """

    def __init__(self, settings: KafkaSettings, naming: Naming) -> None:
        self._settings = settings
        self._naming = naming
        conf: dict[str, Any] = dict(settings.client_config())
        conf.update(
            {
                # Assigned, never subscribed or committed: the id is only a formality.
                "group.id": f"{settings.group_prefix}.lanewatch",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "enable.partition.eof": False,
            }
        )
        self._consumer = Consumer(conf, logger=client_logger())
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        # queue -> lane topic -> (lane, monotonic time the signal was read)
        self._signalled: dict[str, dict[str, tuple[Lane, float]]] = {}
        self._assigned: list[TopicPartition] = []
        self._to_assign: list[_Assign] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workq-kafka-lanes", daemon=True)
        self._thread.start()

    def watch(self, queue: str, listener: Listener) -> None:
        """Call ``listener`` with each note on ``queue``'s lanes: a new lane topic, or
        new records in one (a work note, see :mod:`.idle`).

        Reading starts at the signal partition's end as of now: a lane made before this
        call is in the listing the consumer makes next, one made after it is signalled
        after it. Raises ``KafkaException`` if the end cannot be read.
        """
        topic = self._naming.signal_topic(queue)
        with self._lock:
            known = queue in self._listeners
            self._listeners.setdefault(queue, []).append(listener)
        if known:
            return
        # The watch's own thread reads the end and assigns: a call on its client from
        # here while that thread polls it blocked until the timeout (the second queue a
        # driver consumed never started).
        request = _Assign(topic)
        with self._lock:
            self._to_assign.append(request)
        if not request.done.wait(self._settings.connect_timeout + 1.0) or request.error:
            with self._lock:
                self._listeners.pop(queue, None)
            raise request.error or KafkaException(
                f"reading the end of {topic!r} took over {self._settings.connect_timeout}s"
            )

    def _end(self, topic: str) -> int:
        """The signal partition's end offset; retried within ``connect_timeout``, as a
        topic made a moment ago may not have a leader the client knows of yet."""
        deadline = time.monotonic() + self._settings.connect_timeout
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, 0),
                    timeout=max(deadline - time.monotonic(), 0.1),
                    cached=False,
                )
                return int(high)
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def unwatch(self, queue: str, listener: Listener) -> None:
        """Stop telling ``listener``; the queue's signals are still read (cheaply)."""
        with self._lock:
            listeners = self._listeners.get(queue, [])
            if listener in listeners:
                listeners.remove(listener)

    def watching(self, queue: str) -> bool:
        with self._lock:
            return queue in self._listeners

    def lanes(self, queue: str) -> list[Lane]:
        """Lanes of ``queue`` signalled since the last listing."""
        with self._lock:
            return [lane for lane, _ in self._signalled.get(queue, {}).values()]

    def forget(self, queue: str, before: float) -> None:
        """Drop signals read before ``before``: a listing begun after them is complete."""
        with self._lock:
            found = self._signalled.get(queue)
            if found:
                for topic in [t for t, (_, at) in found.items() if at < before]:
                    del found[topic]

    def close(self) -> None:
        self._closing.set()
        if self._thread is not threading.current_thread():
            self._thread.join(FETCH_WAIT_MS / 1000 + 10)

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                with self._lock:
                    todo, self._to_assign = self._to_assign, []
                for request in todo:
                    try:
                        tp = TopicPartition(request.topic, 0, self._end(request.topic))
                        self._consumer.incremental_assign([tp])
                        self._assigned.append(tp)
                    except KafkaException as exc:
                        request.error = exc
                    request.done.set()
                if not self._assigned:
                    self._closing.wait(0.05)
                    continue
                # poll, not consume: consume(n, t) waits for n records or t seconds.
                message = self._consumer.poll(0.2)
                if message is not None and message.error() is None:
                    self._signal(message.topic() or "", message.key(), message.value())
        except Exception:
            log.exception("the Kafka lane watch failed; new lanes are found by listing only")
        finally:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.info("closing the Kafka lane watch: %s", exc)

    def _signal(self, signal_topic: str, key: bytes | None, value: bytes | None) -> None:
        if not key:
            return
        lane_topic = key.decode(errors="replace")
        new = value != WORK
        with self._lock:
            queues = [q for q in self._listeners if self._naming.signal_topic(q) == signal_topic]
            told: list[Listener] = []
            for queue in queues:
                lane = self._naming.lane_of(lane_topic, queue)
                if lane is None:
                    continue
                if new:
                    self._signalled.setdefault(queue, {})[lane_topic] = (lane, time.monotonic())
                told.extend(self._listeners[queue])
        for listener in told:
            listener(lane_topic, new)
