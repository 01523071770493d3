"""The idle sweep: end offsets of sleeping partitions, read on a thread of its own.

Receivers stop fetching partitions that have been idle (see :mod:`.idle`); a work note
wakes them when a workq producer writes, and this sweep when anything else does. Every
``lane_idle_sweep`` seconds it asks the brokers for the end offsets of every sleeping
partition of every receiver of the connection and wakes those whose end moved past
where their fetching stopped (less often past ``RATE`` partitions a second). Its own
thread and client: the requests take tens of milliseconds at thousands of partitions,
more on a busy broker, and a receiver's poll thread held up that long delayed new
lanes' assignments by seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .logs import client_logger
from .settings import KafkaSettings

if TYPE_CHECKING:
    from .receiver import KafkaReceiver

__all__ = ["IdleSweep"]

log = logging.getLogger("workq.kafka")

#: Partitions per end-offset request: the client's cost grows with the square of the
#: partitions in one call (90 ms of CPU for 3,000 at once, 13 ms in chunks of 100).
CHUNK = 100
#: Most sleeping partitions swept per second on average: a sweep costs about 5 us of
#: CPU per partition, so past ``RATE * lane_idle_sweep`` partitions the sweeps space out
#: (3,000 sleeping partitions: one every 6 s) and an idle consumer's cost stays flat as
#: tenants are added. Records from workq producers wake a lane by their work notes
#: whatever the pace; only records from plain producers wait for a sweep.
RATE = 500.0


def _pause_after(swept: int, settings: KafkaSettings) -> float:
    """Seconds until the next sweep after one that looked at ``swept`` partitions."""
    return max(settings.lane_idle_sweep, swept / RATE)


class IdleSweep:
    """One sweeper for the receivers of a connection.

    Args:
        settings: The connection's settings (``lane_idle_sweep``, ``connect_timeout``).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        conf: dict[str, Any] = dict(settings.client_config())
        # Never subscribes or commits: the id is only a formality.
        conf.update({"group.id": f"{settings.group_prefix}.idlesweep", "enable.auto.commit": False})
        self._consumer = Consumer(conf, logger=client_logger())
        self._receivers: list[KafkaReceiver] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workq-kafka-sweep", daemon=True)
        self._thread.start()

    def add(self, receiver: KafkaReceiver) -> None:
        """Sweep ``receiver``'s sleeping partitions from now on."""
        with self._lock:
            self._receivers.append(receiver)

    def remove(self, receiver: KafkaReceiver) -> None:
        with self._lock:
            if receiver in self._receivers:
                self._receivers.remove(receiver)

    def close(self) -> None:
        self._closing.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self._settings.connect_timeout + 5)

    def _run(self) -> None:
        try:
            pause = self._settings.lane_idle_sweep
            while not self._closing.wait(pause):
                with self._lock:
                    receivers = list(self._receivers)
                swept = 0
                for receiver in receivers:
                    asleep = receiver.sleeping()
                    if asleep:
                        swept += len(asleep)
                        moved = self._moved(asleep)
                        if moved:
                            receiver.wake(moved)
                pause = _pause_after(swept, self._settings)
        except Exception:
            log.exception("the Kafka idle sweep failed; idle lanes wake on work notes only")
        finally:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.info("closing the Kafka idle sweep: %s", exc)

    def _moved(self, asleep: list[tuple[tuple[str, int], int | None]]) -> set[tuple[str, int]]:
        """Those of ``asleep`` whose end offset is past where they stopped."""
        moved: set[tuple[str, int]] = set()
        for start in range(0, len(asleep), CHUNK):
            chunk = asleep[start : start + CHUNK]
            try:
                # Timestamp -1 asks for the end offset.
                ends = self._consumer.offsets_for_times(
                    [TopicPartition(*key, -1) for key, _ in chunk],
                    timeout=self._settings.connect_timeout,
                )
            except KafkaException as exc:
                # Unknown ends: wake them, at the cost of fetching them for lane_idle.
                log.info("end offsets of idle partitions not read (%s); waking them", exc)
                moved.update(key for key, _ in chunk)
                continue
            stopped = dict(chunk)
            moved.update(
                (tp.topic, tp.partition)
                for tp in ends
                if tp.error is not None or (stopped.get((tp.topic, tp.partition)) or 0) < tp.offset
            )
        return moved
