"""Work notes, the producer's side: a lane topic got records (see :mod:`.idle`).

A workq producer that writes to a lane topic also writes the topic's name to the
queue's signal topic (``<queue>.lanes``, value ``w``), at most once per ``NOTE_EVERY``
per lane, so consumers that stopped fetching the lane as idle fetch it again at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from ...errors import BrokerUnavailable
from ...lanes import Lane
from ...spec import QueueSpec
from .idle import NOTE_EVERY, WORK
from .producing import Publisher, Record, _Failed
from .topics import Naming

__all__ = ["NoteClock", "WorkNotes"]

log = logging.getLogger("workq.kafka")

#: Seconds a queue's work notes are not tried after one failed.
NOTES_OFF = 60.0


class NoteClock:
    """A producer's side: which lane topics are due a work note (thread-safe)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, topics: Iterable[str], now: float) -> list[str]:
        """Those of ``topics`` not noted in the last ``NOTE_EVERY`` seconds, now noted."""
        with self._lock:
            due = [t for t in topics if now - self._last.get(t, -NOTE_EVERY) >= NOTE_EVERY]
            for topic in due:
                self._last[topic] = now
        return due


class WorkNotes:
    """Writes a connection's work notes.

    Args:
        publisher: The connection's producers.
        naming: Topic names.
        signal_topic: The queue's signal topic, made if missing (may raise
            ``BrokerUnavailable`` or ``KafkaException``).
    """

    def __init__(
        self, publisher: Publisher, naming: Naming, signal_topic: Callable[[QueueSpec], str]
    ) -> None:
        self._publisher = publisher
        self._naming = naming
        self._signal_topic = signal_topic
        self._clock = NoteClock()
        # queue -> monotonic time until which its notes are not tried (they failed)
        self._off: dict[str, float] = {}

    def write(self, spec: QueueSpec, records: Sequence[Record], new: dict[str, Lane]) -> None:
        """Write work notes for the lanes ``records`` go to, if due (see :mod:`.idle`).

        Queued, not waited for: a lost note costs a consumer at most ``lane_idle_sweep``,
        and a queue whose signal topic cannot be made or written is left to the sweep.
        """
        now = time.monotonic()
        if self._off and self._off.get(spec.name, 0.0) > now:
            return
        dlq = self._naming.dlq_topic(spec.name)
        topics = {r.topic for r in records if r.topic != dlq and r.topic not in new}
        due = self._clock.due(topics, now) if topics else []
        if not due:
            return
        try:
            topic = self._signal_topic(spec)
            for lane_topic in due:
                self._publisher.produce(
                    Record(topic, WORK, [], key=lane_topic.encode()),
                    functools.partial(self._written, spec.name),
                    # At once, on the producer made at connect: a first note on the
                    # lingering one waited half a second for that client's start-up.
                    path="prompt",
                )
        except (BrokerUnavailable, KafkaException, _Failed) as exc:
            self._off[spec.name] = now + NOTES_OFF
            log.info(
                "queue %r: cannot write work notes (%s); idle consumers find new records "
                "by their lane_idle_sweep (tried again in %gs)",
                spec.name,
                exc,
                NOTES_OFF,
            )

    def _written(self, queue: str, err: KafkaError | None, msg: Any) -> None:
        if err is not None and self._off.get(queue, 0.0) <= time.monotonic():
            # A topic this client may not write to would fail every note: a pause.
            self._off[queue] = time.monotonic() + NOTES_OFF
            log.info(
                "queue %r: a work note was not written (%s); idle consumers find new "
                "records by their lane_idle_sweep (tried again in %gs)",
                queue,
                err,
                NOTES_OFF,
            )
