"""Receiving across lanes, done once: strict priority and round-robin over "take from a lane".

A backend whose broker has no notion of lanes (one queue, table or in-process deque per
lane) implements :class:`PollingReceiver`: it says how to take up to ``n`` messages
from one lane now, and optionally how to count a lane's ready messages and how to wait
for any lane to have work. ``PollingReceiver.receive`` does the rest, the same way for
every backend:

- Lanes come in the consumer's order of preference (priority descending, the tenant
  whose turn it is first). Only lanes of the highest priority that has messages are
  taken from; the count is spread over that level's lanes, never drained from one.
- A backend that counts (``available``) gets an exact plan (:func:`workq.lanes.spread`):
  lower levels fill what the top level cannot, all in one atomic ``step``.
- A backend that cannot count is asked level by level, each lane for its share of what
  is still wanted, and lower levels only when a whole level gave nothing.
- With nothing there, ``wait_any`` waits for news of any lane, then the lanes are
  taken from again, until the receive's timeout.

The planning is I/O-free (:func:`levels`, :func:`share`), so an async receiver can
follow the same rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import groupby
from operator import attrgetter

from .driver import Received, Receiver
from .lanes import Lane, spread

__all__ = ["PollingReceiver", "levels", "share"]

_PRIORITY = attrgetter("priority")


def levels(lanes: Iterable[Lane]) -> list[list[Lane]]:
    """Consecutive lanes of one priority, in the order given (the consumer's order).

    Example:
        ```python
        levels([Lane("q", "a", 9), Lane("q", "b", 9), Lane("q", None, 0)])
        # [[Lane("q", "a", 9), Lane("q", "b", 9)], [Lane("q", None, 0)]]
        ```
    """
    # groupby walks the lanes in C: this runs on every sweep that finds work.
    return [list(level) for _, level in groupby(lanes, key=_PRIORITY)]


def share(wanted: int, lanes_left: int) -> int:
    """What the next lane of a level is asked for: an equal share of what is still
    ``wanted`` over the ``lanes_left`` lanes not yet asked (itself included), rounded up,
    so what one lane lacks the next ones take.

    Example:
        ```python
        share(10, 3)  # 4, then share(6, 2) == 3 and share(3, 1) == 3
        ```
    """
    return math.ceil(wanted / lanes_left) if lanes_left > 0 else 0


class PollingReceiver(Receiver):
    """A :class:`~workq.driver.Receiver` whose ``receive`` is done by the core.

    Subclasses implement :meth:`take` (and the settlement methods of ``Receiver``);
    :meth:`available`, :meth:`step`, :meth:`due`, :meth:`wait_any` and :meth:`glance`
    are optional. None of them re-implements priority or fairness: that is
    :meth:`receive`'s, here.

    Example:
        ```python
        class ListReceiver(PollingReceiver):
            def __init__(self, lanes: dict[Lane, list[Received]]) -> None:
                self.lanes = lanes

            def take(self, lane: Lane, n: int) -> list[Received]:
                got, self.lanes[lane][:n] = self.lanes[lane][:n], []
                return got

            ...  # ack, nack, dead_letter, extend, release, close
        ```
    """

    #: A receiver sets this in ``close()``; a closed receiver receives nothing.
    closed: bool = False

    #: Longest pause of the default :meth:`wait_any` (a backend with no way to wait).
    poll_interval: float = 0.05

    def take(self, lane: Lane, n: int) -> list[Received]:
        """Up to ``n`` deliveries from ``lane``, now, without waiting (``n >= 1``).

        Each one is held by this receiver (under its lease) until settled or released.
        """
        raise NotImplementedError

    def available(self, lanes: Sequence[Lane], up_to: int) -> Mapping[Lane, int] | None:
        """How many messages each of ``lanes`` could give now, each counted up to ``up_to``.

        ``None`` (the default): this backend cannot count; lanes are then asked in turn.
        A backend that counts answers exactly inside :meth:`step`, so what it counted
        there is what :meth:`take` finds.
        """
        return None

    def step(self, fn: Callable[[], list[Received]]) -> list[Received]:
        """Run one round of counting and taking as one atomic step (a lock, a
        transaction); the default runs ``fn`` as it is."""
        return fn()

    def due(self, lanes: list[Lane]) -> list[Lane]:
        """The lanes worth asking now, in the order given (default: all of them).

        A backend where asking costs a request (SQS) leaves out lanes it has reason to
        think empty; it must ask each of them again in time, as nothing else will.
        """
        return lanes

    def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> list[Received] | None:
        """Wait up to ``timeout`` seconds for any of ``lanes`` to have work.

        Return ``None`` to have the lanes taken from again (while the receive's time
        lasts), or a list to end the receive with it: what the wait itself received (a
        long poll of one lane), or ``[]`` when it waited and nothing came. The default
        pauses ``poll_interval`` and returns ``None``.
        """
        time.sleep(min(timeout, self.poll_interval))
        return None

    def glance(self, lanes: list[Lane]) -> None:
        """Called when a receive ends without waiting (it took something, or had no
        time to wait): a backend that learns of work only by waiting (a doorbell) looks
        for news here without waiting, now and then, so a busy consumer hears of other
        lanes too. The default does nothing."""

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        """Up to ``max_count`` deliveries from ``lanes`` by the lane rules; wait up to
        ``timeout`` for one (see the module docstring)."""
        lanes = list(lanes)
        if self.closed or max_count <= 0 or not lanes:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            got = self._sweep(lanes, max_count)
            if self.closed:  # closed meanwhile: the consumer gives back what came late
                return got
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                self.glance(lanes)
                return got
            waited = self.wait_any(lanes, max_count, remaining)
            if waited is not None:
                return waited
            # Woken, or the time is up: look once more either way (what came at the
            # last moment is taken now, not on the next receive).

    def _sweep(self, lanes: list[Lane], max_count: int) -> list[Received]:
        """One pass over the lanes: what strict priority and fair turns allow now."""
        lanes = self.due(lanes)
        if not lanes or self.closed:
            return []
        counts = self.available(lanes, 1)
        if counts is None:
            return self.step(lambda: self._by_levels(lanes, max_count))
        # A cheap look outside the step first: an idle receiver must not take the
        # step's lock (a write transaction on sqlite) on every poll.
        if not any(counts.values()):
            return []
        return self.step(lambda: self._planned(lanes, max_count))

    def _planned(self, lanes: list[Lane], max_count: int) -> list[Received]:
        counts: dict[Lane, int] = {}
        for level in levels(lanes):
            # Count the levels top down and stop once the batch can be filled.
            counts.update(self.available(level, max_count) or {})
            if sum(counts.values()) >= max_count:
                break
        got: list[Received] = []
        for lane, n in spread(lanes, max_count, counts).items():
            got += self.take(lane, n)
        return got

    def _by_levels(self, lanes: list[Lane], max_count: int) -> list[Received]:
        for level in levels(lanes):
            got: list[Received] = []
            for i, lane in enumerate(level):
                n = share(max_count - len(got), len(level) - i)
                if n > 0:
                    got += self.take(lane, n)
            if got:
                return got
        return []
