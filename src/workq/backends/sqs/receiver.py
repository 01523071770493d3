"""One consumer's receives and settlements on SQS.

Which lanes to take from (priority, tenants' turns) is the core's
(:class:`workq.polling.PollingReceiver`): here a take is one short poll of one lane,
and waiting is a long poll of the default lane or the doorbell (see :class:`SQSReceiver`).

A release is not an attempt. SQS counts every receive (``ApproximateReceiveCount``) and
cannot change a message in place, so a released message is sent again, with its attempt
so far carried in the workq attribute, and the received copy is deleted. That way any
process that receives it next sees the same attempt (see docs/backends/sqs.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...driver import Outgoing, Received
from ...lanes import Lane
from ...polling import PollingReceiver
from ...spec import QueueSpec
from .batching import BATCH, Token
from .client import QueueMissing, SQSError
from .codec import (
    MAX_VISIBILITY,
    SYSTEM_ATTRIBUTES,
    Meta,
    attributes,
    encode_body,
    received,
    whole_seconds,
)
from .doorbell import BACKLOG_READS, NOTES_PER_READ, READ_EVERY, READ_EVERY_ONE_LANE, Pacer

if TYPE_CHECKING:
    from .driver import SQSDriver

__all__ = ["SQSReceiver"]

log = logging.getLogger("workq.sqs")

_GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})


class SQSReceiver(PollingReceiver):
    """One consumer's receives: short polls of the lanes worth one, then one long poll.

    Strict priority needs every higher lane checked before a lower one, and SQS cannot
    long-poll several queues in one request. So the core's receive asks the lanes due a
    poll (see :class:`.doorbell.Pacer`) level by level, each with ``WaitTimeSeconds=0``
    (:meth:`take`); when nothing came, :meth:`wait_any` long-polls, in turn, the default
    lane and the queue's doorbell; a note on the doorbell makes its lane due at once.
    """

    def __init__(self, driver: SQSDriver, spec: QueueSpec) -> None:
        self._d = driver
        self._spec = spec
        self._visibility = whole_seconds(spec.lease, MAX_VISIBILITY) or 1
        self._held: dict[int, Received] = {}
        self._lock = threading.Lock()
        self._default = Lane(spec.name)
        self._pace = Pacer(self._default, spec.lease, driver.settings.lane_sweep)
        self._read_at = 0.0
        self._bell_turn = True  # the default lane's turn first

    # -- receiving: the core picks the lanes ----------------------------------------

    def due(self, lanes: list[Lane]) -> list[Lane]:
        now = time.monotonic()
        return [lane for lane in lanes if self._pace.due(lane, now)]

    def take(self, lane: Lane, n: int) -> list[Received]:
        return self._poll(lane, n, 0)

    def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> list[Received] | None:
        wait = self._d.wait_seconds(timeout)
        if not wait:
            self.glance(lanes)
            return []
        # Nothing due had anything: wait on the default lane (plain producers do not
        # ring) and the doorbell in turn, so an idle consumer costs one request a slice.
        self._bell_turn = not self._bell_turn
        if self._default in lanes and not self._bell_turn:
            return self._poll(self._default, max_count, wait)
        return None if self._read_bell(lanes, wait) else []

    def glance(self, lanes: list[Lane]) -> None:
        # One lane: only a new tenant's lane could be news, and the listing finds it
        # too; so read less often and keep a busy single lane's requests low.
        every = READ_EVERY if len(lanes) > 1 else READ_EVERY_ONE_LANE
        if time.monotonic() - self._read_at >= every:
            # Busy (or not waiting): read the doorbell without waiting now and then, so
            # a quiet tenant's note is not left behind a busy lane's work.
            self._read_bell(lanes, 0)

    def _read_bell(self, lanes: list[Lane], wait: int) -> bool:
        """Read the doorbell; True if it told of a lane in ``lanes``.

        A burst of publishes to many lanes leaves a backlog of notes, and a read takes
        at most 10: while reads come back full, read on (up to ``BACKLOG_READS``), or a
        quiet tenant's note would wait behind the burst's, read 10 a second, and could
        expire unread (notes live 60 s), leaving its message to the lane sweep.
        """
        self._read_at = time.monotonic()
        mine = set(lanes)
        told = False
        for _ in range(BACKLOG_READS):
            notes = self._d.doorbell.read(self._spec.name, wait)
            wait = 0  # only the first read waits
            now = time.monotonic()
            done: list[str] = []
            for note in notes:
                if note.lane not in mine:
                    # A new lane (found by the next lanes()), or one this consumer does
                    # not take: the note comes back to the others.
                    self._d.discovered(self._spec.name, note.lane)
                    continue
                if not self._pace.stale(note):
                    self._pace.rang(note.lane, now, note.delay)
                    told = True
                done.append(note.handle)
            self._d.doorbell.done(self._spec.name, done)
            # Read on only through a backlog of this consumer's own notes: a read of
            # nothing but other consumers' notes (a tenant filter) is theirs to drain.
            if len(notes) < NOTES_PER_READ or not done:
                break
        return told

    def _poll(self, lane: Lane, count: int, wait: int) -> list[Received]:
        url = self._d.lane_url(self._spec, lane, create=False)
        if url is None:
            return []
        self._pace.polling(lane, time.time())
        try:
            client = self._d.sqs.poller(wait)
            # One try, and a second only after a quick failure: a consumer must learn
            # promptly that SQS is unreachable (the worker reconnects and calls again).
            resp = self._d.sqs.call_within(
                self._d.sqs.bound(client) + 2.0,
                self._spec.name,
                client.receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=min(count, BATCH),
                WaitTimeSeconds=wait,
                VisibilityTimeout=self._visibility,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
            )
        except QueueMissing:
            self._d.forget(self._spec, lane)
            return []
        messages = resp.get("Messages", [])
        if messages:
            self._pace.had_work(lane, time.monotonic())
        else:
            self._pace.empty(lane, time.monotonic())
        out: list[Received] = []
        late: list[tuple[Any, Meta]] = []
        now = time.time()
        for m in messages:
            meta = Meta.load(m)
            if meta.not_before is not None and meta.not_before > now + 0.5:
                late.append((m, meta))
                continue
            token = Token(url, m["ReceiptHandle"], m["MessageId"])
            out.append(received(lane, m, meta, token))
        if late:
            self._d.defer(self._spec, url, late)
        with self._lock:
            closed = self.closed
            if not closed:
                for item in out:
                    self._held[id(item.token)] = item
        if closed and out:
            # Closed while this receive was in flight: give them straight back.
            self._give_back([(item.token, item) for item in out])
            return []
        return out

    def _settling(self, item: Received) -> Token:
        token: Token = item.token
        with self._lock:
            self._held.pop(id(token), None)
        return token

    def ack(self, item: Received) -> None:
        token = self._settling(item)
        self._d.deleter.add(token.url, token.handle)

    def nack(self, item: Received, delay: float | None) -> None:
        token = self._settling(item)
        seconds = whole_seconds(delay, MAX_VISIBILITY + 1)
        # No note is rung for it: this consumer looks again when it is due.
        self._pace.expect(item.lane, time.monotonic() + seconds)
        if seconds <= MAX_VISIBILITY:
            try:
                self._d.sqs.call(
                    self._spec.name,
                    self._d.sqs.client.change_message_visibility,
                    QueueUrl=token.url,
                    ReceiptHandle=token.handle,
                    VisibilityTimeout=seconds,
                )
                return
            except SQSError as exc:
                if exc.code in ("ReceiptHandleIsInvalid", "MessageNotInflight"):
                    return  # its visibility lapsed already: it is back in the queue anyway
                if exc.code != "InvalidParameterValue" or seconds == 0:
                    raise
        # Longer than SQS keeps a message invisible (12 h from its first receive):
        # send it on with a not-before time and drop this copy.
        again = Outgoing(
            lane=item.lane,
            id=item.id,
            body=item.body,
            headers=dict(item.headers),
            delay=delay,
            attempt=item.attempt + 1,
            enqueued_at=item.enqueued_at,
        )
        self._d.publish(self._spec, [again])
        self._delete(token)

    def _delete(self, token: Token) -> None:
        try:
            self._d.sqs.call(
                self._spec.name,
                self._d.sqs.client.delete_message,
                QueueUrl=token.url,
                ReceiptHandle=token.handle,
            )
        except SQSError as exc:
            if exc.code not in _GONE_CODES:
                raise

    def dead_letter(self, item: Received, reason: str) -> None:
        token = self._settling(item)
        text, encoding = encode_body(item.body)
        meta = Meta(
            id=item.id,
            tenant=item.lane.tenant,
            priority=item.lane.priority,
            headers=dict(item.headers),
            enqueued_at=item.enqueued_at,
            encoding=encoding,
            reason=reason[:4096],
            dead_attempt=item.attempt,
            dead_at=time.time(),
        )
        for fresh in (False, True):
            try:
                self._d.sqs.call(
                    self._spec.name,
                    self._d.sqs.client.send_message,
                    QueueUrl=self._d.dlq_url(self._spec, fresh=fresh),
                    MessageBody=text,
                    MessageAttributes=attributes(meta),
                )
                break
            except QueueMissing:
                if fresh:
                    raise
                log.warning("dead-letter queue of %r vanished; declaring it again", self._spec.name)
        self._delete(token)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        with self._lock:
            tokens = [i.token for i in items if id(i.token) in self._held]
        if tokens:
            self._d.change_visibility(
                self._spec.name, tokens, whole_seconds(seconds, MAX_VISIBILITY) or 1
            )

    def release(self, items: Sequence[Received]) -> None:
        self._give_back([(self._settling(item), item) for item in items])

    def _give_back(self, items: Sequence[tuple[Token, Received]]) -> None:
        """Send each one again with its attempt so far, then delete the received copy.

        Should sending fail (SQS unreachable), the copies are made visible instead if
        that works, else they come back when their visibility lapses: either way as one
        more attempt, never lost.
        """
        if not items:
            return
        by_url: dict[str, list[tuple[Token, Received]]] = {}
        for token, item in items:
            by_url.setdefault(token.url, []).append((token, item))
        for url, group in by_url.items():
            again = [
                Outgoing(
                    lane=item.lane,
                    id=item.id,
                    body=item.body,
                    headers=dict(item.headers),
                    attempt=item.attempt,
                    enqueued_at=item.enqueued_at,
                )
                for _, item in group
            ]
            try:
                self._d.resend(self._spec, url, again)
            except Exception as exc:
                log.warning(
                    "releasing %d messages of queue %r by sending them again failed (%s); "
                    "making them visible instead: they will count one more attempt",
                    len(group),
                    self._spec.name,
                    exc,
                )
                try:
                    self._d.change_visibility(self._spec.name, [t for t, _ in group], 0)
                except Exception as exc2:  # they come back when their visibility lapses
                    log.warning("making released messages visible failed: %s", exc2)
                continue
            try:
                self._d.delete_batch(self._spec, url, [t.handle for t, _ in group])
            except Exception as exc:
                log.warning(
                    "deleting %d released copies on queue %r failed (%s): they may be "
                    "delivered twice",
                    len(group),
                    self._spec.name,
                    exc,
                )

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            held = [(item.token, item) for item in self._held.values()]
            self._held.clear()
        try:
            self._give_back(held)
        finally:
            self._d.deleter.flush()
