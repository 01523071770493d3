"""Idle partitions: not fetched while nothing is written to them.

An idle consumer's cost on Kafka grows with the partitions it fetches: every fetch
names them all (3,000 at 1,000 tenant lanes of 3 partitions), ten times a second, and
the broker and librdkafka's broker thread pay for each. So a partition that reached its
end and has had nothing new for ``lane_idle`` seconds is paused ("asleep"), and woken:

- by a work note: a workq producer that writes to a lane topic also writes the topic's
  name to the queue's signal topic (``<queue>.lanes``, see :mod:`.lanewatch`), at most
  once per ``NOTE_EVERY`` per lane and producer, which every consumer process reads;
- by a sweep every ``lane_idle_sweep`` seconds (less often past 500 sleeping
  partitions a second, see :mod:`.sweep`): ListOffsets requests for the end
  offsets of every sleeping partition, which wake those whose end moved past the
  consumer's position (records from producers that write no notes: plain clients,
  other libraries, a note lost to a failure). :mod:`.sweep` makes them on its own
  thread and client, so a slow answer never holds up a receiver's poll thread.

Why a note never comes too late: a producer skips a note only when it wrote one for the
lane less than ``NOTE_EVERY`` ago; that note reached the consumer, which then keeps the
lane fetched for ``lane_idle`` (> ``NOTE_EVERY`` by a margin) after reading it, long
enough to fetch the record the skipped note was for.

I/O-free and called under the receiver's lock; the receiver pauses and resumes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .partitions import Part

__all__ = ["NOTE_EVERY", "WORK", "IdleParts"]

#: Seconds a producer waits before writing another work note for the same lane.
NOTE_EVERY = 1.0
#: A work note's value (a new-lane signal's value is empty).
WORK = b"w"
#: Seconds between looks for partitions to put to sleep (each walks every partition:
#: 4 a second cost an idle consumer of 3,000 partitions 0.003 s of CPU a second).
CHECK_EVERY = 1.0


class IdleParts:
    """Which partitions to put to sleep and which to wake.

    Args:
        after: Seconds with nothing new before a partition at its end sleeps; 0: never.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._noted: set[str] = set()  # topics with work notes since the last look
        self._moved: set[tuple[str, int]] = set()  # sleeping partitions the sweep found moved
        self._next_check = 0.0

    def noted(self, topic: str) -> None:
        """A work note for ``topic`` was read: its partitions are fetched again."""
        self._noted.add(topic)

    def moved(self, keys: Iterable[tuple[str, int]]) -> None:
        """The sweep found records past where these sleeping partitions stopped."""
        self._moved.update(keys)

    def due(self, parts: Collection[Part], now: float) -> tuple[list[Part], list[Part]]:
        """Partitions to put to sleep and to wake now, their ``asleep`` flags set.

        A partition sleeps when it is at its end (``eof``), holds nothing, is not paused
        for flow and has seen no record, note or assignment for ``after`` seconds.
        """
        noted, self._noted = self._noted, set()
        moved, self._moved = self._moved, set()
        wake: list[Part] = []
        if noted or moved:
            for part in parts:
                if part.key[0] in noted or part.key in moved:
                    part.active_at = now
                    if part.asleep:
                        part.asleep = False
                        wake.append(part)
        if self.after <= 0 or now < self._next_check:
            return [], wake
        self._next_check = now + CHECK_EVERY
        idle_since = now - self.after
        sleep = [
            part
            for part in parts
            if not part.asleep
            and part.eof
            and not part.paused
            and not part.buffer
            and part.active_at <= idle_since
        ]
        for part in sleep:
            part.asleep = True
        return sleep, wake
