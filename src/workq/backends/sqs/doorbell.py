"""The doorbell: what keeps an idle consumer of many lanes cheap on SQS.

SQS cannot long-poll several queues in one request, so a consumer of T lanes that
polled each of them every poll slice made about T requests a second while idle. Instead:

- Producers post a note to one "doorbell" queue per workq queue (``<queue>_bell``) when
  they publish to a lane other than the default one: the lane's tenant and priority, and
  its delay. Notes are coalesced: one per lane per second per producer.
- An idle consumer long-polls the doorbell (alternating with the default lane, which
  plain producers write to without ringing), and polls only the lanes it was told of.
- A busy consumer reads the doorbell without waiting once a second.
- Every lane is still polled now and then (:class:`Pacer`): a lane a note named is
  polled again after 1, 2 and 4 seconds (covering the coalescing window), one that had
  work at most every lease for two leases (messages whose visibility lapsed), then at
  most every ``lane_sweep`` seconds: the safety net for a lost note.
- A burst of publishes to many lanes leaves many notes; a consumer reads on while the
  doorbell returns full batches, so a later note is not stuck behind them.

Notes live 60 s (SQS's shortest retention): a consumer that starts polls every lane
once anyway.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ...lanes import Lane
from .batching import chunks, delete_batch
from .client import QueueMissing
from .naming import TAG, base_name

if TYPE_CHECKING:
    from .driver import SQSDriver

__all__ = ["Doorbell", "Note", "Pacer", "bell_name"]

log = logging.getLogger("workq.sqs")

#: A producer rings for one lane at most this often (s).
RING_EVERY = 1.0
#: A busy consumer reads the doorbell without waiting this often (s).
READ_EVERY = 1.0
#: ... and this often when it has a single lane (only a new lane would be news).
READ_EVERY_ONE_LANE = 5.0
#: Notes unread for this long (s) expire: SQS's shortest retention.
NOTE_RETENTION = "60"
#: A note another consumer's lane list does not have comes back to others after (s).
NOTE_VISIBILITY = 2
#: The default lane (which plain producers write to) is never left longer than this (s).
DEFAULT_GAP = 2.0
#: A read of the doorbell returns at most this many notes (SQS's batch limit).
NOTES_PER_READ = 10
#: While reads come back full, one look at the doorbell reads on up to this many times.
BACKLOG_READS = 20
#: A lane a note named, found empty, is polled again after 1, 2 and 4 s (a producer's
#: coalesced publishes; a short poll that missed a message) and then left to the sweep.
RECHECK_UNTIL = 4.0
#: A note sent this long (s) before a poll of its lane began is stale (clock skew).
STALE_MARGIN = 1.0


class Note(NamedTuple):
    """A note read from a doorbell."""

    lane: Lane
    delay: float  #: its message becomes visible this long after it was sent (s)
    handle: str  #: the receipt handle, to delete the note
    sent: float  #: when the note was sent (epoch s, SQS's clock; 0 if not told)


def bell_name(prefix: str, queue: str) -> str:
    """The SQS name of a queue's doorbell."""
    return base_name(prefix, queue) + "_bell"


class Doorbell:
    """A driver's doorbells, one per workq queue: ringing, and reading notes."""

    def __init__(self, driver: SQSDriver) -> None:
        self._d = driver
        self._rung: dict[Lane, float] = {}
        self._lock = threading.Lock()
        #: ReceiveMessage requests made on doorbells (tests tell them from the lanes').
        self.reads = 0

    def url(self, queue: str) -> str:
        name = bell_name(self._d.prefix, queue)
        url = self._d.find(queue, name)
        if url is None:
            attrs = {"MessageRetentionPeriod": NOTE_RETENTION}
            url = self._d.create(queue, name, attrs, {TAG + "queue": queue, TAG + "bell": "1"})
        return url

    def ring(self, queue: str, lanes: Iterable[tuple[Lane, float]], budget: float) -> None:
        """Tell consumers these lanes have work (``(lane, delay)``), coalesced, if one
        try fits in ``budget`` seconds; never raises: the messages are sent already,
        and a lost note costs only latency (until the lane sweep)."""
        sqs = self._d.sqs
        if budget < sqs.bound(sqs.client):
            return
        now = time.monotonic()
        notes = []
        with self._lock:
            for lane, delay in lanes:
                if lane == Lane(queue) or now - self._rung.get(lane, -RING_EVERY) < RING_EVERY:
                    continue
                self._rung[lane] = now
                notes.append({"t": lane.tenant, "p": lane.priority, "d": round(delay, 3)})
        if not notes:
            return
        try:
            try:
                self._send(queue, notes)
            except QueueMissing:  # the endpoint lost its state: make the doorbell again
                self._d.forget_name(bell_name(self._d.prefix, queue))
                self._send(queue, notes)
        except Exception as exc:  # a note is a hint; the lane sweep finds the message
            log.debug("ringing the doorbell of %r failed: %s", queue, exc)

    def _send(self, queue: str, notes: list[dict[str, Any]]) -> None:
        url = self.url(queue)
        sqs = self._d.sqs
        for chunk in chunks(notes):
            sqs.call_within(
                sqs.bound(sqs.client),
                queue,
                sqs.client.send_message_batch,
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(note, separators=(",", ":"))}
                    for i, note in enumerate(chunk)
                ],
            )

    def read(self, queue: str, wait: int) -> list[Note]:
        """Notes waiting (up to 10), after a long poll of ``wait`` s."""
        url = self.url(queue)
        sqs = self._d.sqs
        client = sqs.poller(wait)
        self.reads += 1
        try:
            resp = sqs.call_within(
                sqs.bound(client) + 2.0,
                queue,
                client.receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=NOTES_PER_READ,
                WaitTimeSeconds=wait,
                VisibilityTimeout=NOTE_VISIBILITY,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
        except QueueMissing:
            self._d.forget_name(bell_name(self._d.prefix, queue))
            return []
        notes = []
        for m in resp.get("Messages", []):
            try:
                data = json.loads(m["Body"])
                lane = Lane(queue, data.get("t"), int(data.get("p", 0)))
                sent = int(m.get("Attributes", {}).get("SentTimestamp", 0)) / 1000
                notes.append(Note(lane, float(data.get("d", 0.0)), str(m["ReceiptHandle"]), sent))
            except (ValueError, TypeError, AttributeError):
                continue  # not a note of ours: it expires
        return notes

    def done(self, queue: str, handles: list[str]) -> None:
        """Delete notes acted on."""
        if not handles:
            return
        try:
            delete_batch(self._d.sqs, queue, self.url(queue), handles)
        except Exception as exc:  # an undeleted note costs one more poll, nothing else
            log.debug("deleting doorbell notes of %r failed: %s", queue, exc)


class Pacer:
    """When each lane is next worth a poll (one receiver's view)."""

    def __init__(self, default: Lane, lease: float, sweep: float) -> None:
        self._default = default
        self._lease = max(lease, 1.0)
        self._sweep = max(sweep, 1.0)
        self._next: dict[Lane, float] = {}
        self._gap: dict[Lane, float] = {}
        self._worked: dict[Lane, float] = {}
        self._expected: dict[Lane, float] = {}
        self._polled: dict[Lane, float] = {}

    def due(self, lane: Lane, now: float) -> bool:
        return self._next.get(lane, 0.0) <= now

    def polling(self, lane: Lane, at: float) -> None:
        """A poll of ``lane`` starts (``at``: wall clock, comparable with SQS's)."""
        self._polled[lane] = at

    def stale(self, note: Note) -> bool:
        """Whether a poll that began after ``note`` was sent (with a second's margin
        for clocks) has looked at its lane already: then the note tells nothing new.
        A consumer's start-up poll of every lane makes the notes of work done before it
        started cost nothing."""
        if note.delay > 0 or note.sent <= 0:  # a delayed message, or no SentTimestamp
            return False
        return self._polled.get(note.lane, 0.0) > note.sent + STALE_MARGIN

    def had_work(self, lane: Lane, now: float) -> None:
        self._next[lane] = 0.0
        self._gap[lane] = 0.0
        self._worked[lane] = now

    def rang(self, lane: Lane, now: float, delay: float = 0.0) -> None:
        """A note says ``lane`` has work, visible after ``delay`` seconds."""
        self._gap[lane] = 0.0
        if delay > 0:
            self.expect(lane, now + delay)
        else:
            self._next[lane] = 0.0

    def expect(self, lane: Lane, at: float) -> None:
        """Something of ``lane`` becomes visible at ``at`` (a delay, a nack's delay)."""
        self._expected[lane] = min(self._expected.get(lane, at), at)
        self._next[lane] = min(self._next.get(lane, 0.0), at)

    def empty(self, lane: Lane, now: float) -> None:
        gap = self._gap.get(lane)
        if gap is None:
            # Never had work here: the doorbell tells of new work; spread the sweeps.
            gap = random.uniform(0.5, 1.0) * self._sweep
        else:
            gap = min(max(gap * 2, 1.0), self._sweep)
            if now - self._worked.get(lane, -1e18) < 2 * self._lease:
                # Recently busy: messages of a crashed consumer come back after a lease.
                gap = min(gap, self._lease)
            elif gap > RECHECK_UNTIL:
                # Rung, rechecked, still empty: the note was stale (its message taken
                # by another consumer, or before this one started). Doubling on up to
                # the sweep would cost every such lane about ten polls; the next
                # publish rings again, and the sweep is the safety net.
                gap = random.uniform(0.5, 1.0) * self._sweep
        if lane == self._default:
            gap = min(gap, DEFAULT_GAP)
        self._gap[lane] = gap
        self._next[lane] = now + gap
        expected = self._expected.get(lane)
        if expected is not None:
            if expected > now:
                self._next[lane] = min(now + gap, expected + 0.05)
            else:
                del self._expected[lane]
