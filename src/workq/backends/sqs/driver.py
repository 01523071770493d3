"""``sqs://REGION?endpoint_url=...``: workq on Amazon SQS (or an SQS-compatible server).

One standard SQS queue per lane (see :mod:`.names`), plus ``<queue>_dlq`` which holds
dead letters and carries the queue's declared settings as tags. Requests go in batches
of 10: send, receive, delete (acks are buffered for a few milliseconds and flushed by
one background thread per connection) and visibility changes (lease extension and
release). The visibility timeout is the lease; the core's lease keeper extends it.
The async API runs this driver on threads (``workq.driver.threaded``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ...driver import Capabilities, DeadLetter, Driver, LaneStats, QueueStats, Receiver
from ...errors import BrokerUnavailable, ConfigurationError, PublishError
from ...lanes import Lane
from ...messages import Outgoing, Received
from ...producer import MessageTooLarge
from ...spec import QueueSpec
from .client import QueueMissing, SQSCalls, SQSError
from .codec import (
    ATTRIBUTE,
    MAX_DELAY,
    MAX_MESSAGE,
    MAX_VISIBILITY,
    Meta,
    attributes,
    encode_body,
    message_size,
    outgoing_meta,
    received,
    whole_seconds,
)
from .names import check_prefix, dlq_name, lane_name, lane_prefix, parse_lane
from .settings import SQSSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

__all__ = ["SQSDriver", "SQSReceiver", "create_driver"]

log = logging.getLogger("workq.sqs")

BATCH = 10
RETENTION = "1209600"  # 14 days, SQS's longest: a backlog must not expire silently
SYSTEM_ATTRIBUTES: list[Any] = ["ApproximateReceiveCount", "SentTimestamp"]
_TAG = "workq-"
_GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})


def create_driver(settings: SQSSettings) -> SQSDriver:
    """Connect and check that SQS answers, so a wrong endpoint fails here, clearly."""
    driver = SQSDriver(settings)
    try:
        driver.sqs.call("*", driver.sqs.client.list_queues, MaxResults=1)
    except BaseException:
        driver.close()
        raise
    return driver


@dataclass(slots=True, eq=False)
class _Token:
    """What a receiver needs to settle one delivery."""

    url: str
    handle: str
    message_id: str


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _PartialFailure(Exception):
    pass


class _Deleter:
    """Acks, buffered per SQS queue and deleted in batches of 10 by one thread.

    A batch goes when 10 are waiting, else ``linger`` seconds after its first ack, and
    on ``flush``. A lost delete only means a redelivery (at-least-once), never a loss.
    """

    def __init__(self, sqs: SQSCalls, linger: float) -> None:
        self._sqs = sqs
        self._linger = linger
        self._pending: dict[str, list[str]] = {}
        self._since = 0.0  # when the oldest pending ack came
        self._cond = threading.Condition()
        self._sending = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, url: str, handle: str) -> None:
        with self._cond:
            if self._stopped:
                self._send(url, [handle])
                return
            if not self._pending:
                self._since = time.monotonic()
            self._pending.setdefault(url, []).append(handle)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="workq-sqs-deleter", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _take(self, everything: bool) -> list[tuple[str, list[str]]]:
        batches = []
        for url, handles in list(self._pending.items()):
            while len(handles) >= BATCH or (everything and handles):
                batches.append((url, handles[:BATCH]))
                del handles[:BATCH]
            if not handles:
                del self._pending[url]
        self._sending += len(batches)
        return batches

    def _full(self) -> bool:
        return any(len(h) >= BATCH for h in self._pending.values())

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopped)
                if self._stopped and not self._pending:
                    return
                # Linger so that acks arriving together share one request: full batches
                # go at once, a partial one when the oldest ack has waited ``linger``.
                due = self._since + self._linger
                self._cond.wait_for(
                    lambda: self._stopped or self._full(), timeout=max(due - time.monotonic(), 0)
                )
                batches = self._take(everything=self._stopped or time.monotonic() >= due)
            self._send_all(batches)

    def _send_all(self, batches: list[tuple[str, list[str]]]) -> None:
        for url, handles in batches:
            try:
                self._send(url, handles)
            finally:
                with self._cond:
                    self._sending -= 1
                    self._cond.notify_all()

    def _send(self, url: str, handles: list[str]) -> None:
        try:
            resp = self._sqs.call(
                url.rsplit("/", 1)[-1],
                self._sqs.client.delete_message_batch,
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)],
            )
        except Exception as exc:
            log.warning(
                "deleting %d acked messages failed; they will be redelivered: %s", len(handles), exc
            )
            return
        for failed in resp.get("Failed", []):
            log.info(
                "ack of a message on %s not applied (%s): it may be redelivered",
                url,
                failed.get("Code"),
            )

    def flush(self) -> None:
        """Send every buffered ack now and wait until all are sent."""
        with self._cond:
            batches = self._take(everything=True)
        self._send_all(batches)
        with self._cond:
            self._cond.wait_for(lambda: self._sending == 0, timeout=30)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()


class SQSDriver(Driver):
    """A connection to SQS: lanes are SQS queues, the visibility timeout is the lease."""

    def __init__(self, settings: SQSSettings) -> None:
        self.settings = settings
        self.prefix = check_prefix(settings.queue_prefix)
        self.capabilities = Capabilities(
            backend="sqs",
            lease_model="lease",
            max_body_size=MAX_MESSAGE,
            lane_refresh=settings.lane_refresh,
            receive_batch=100,
        )
        self.sqs = SQSCalls(settings)
        self.deleter = _Deleter(self.sqs, settings.ack_linger)
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._known: dict[str, set[Lane]] = {}
        self._tag_tenants: dict[str, str | None] = {}
        self._released: OrderedDict[str, int] = OrderedDict()
        self._closed = False

    # -- queues ---------------------------------------------------------------------

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        spec.check_options("sqs")
        name = dlq_name(self.prefix, spec.name)
        url = self._find(spec.name, name)
        if url is None:
            self._create(spec.name, name, {}, _spec_tags(spec, implicit))
            return spec
        tags = self.sqs.call(spec.name, self.sqs.client.list_queue_tags, QueueUrl=url)
        stored, was_implicit = _spec_from_tags(spec.name, tags.get("Tags", {}))
        if stored is None or (was_implicit and not implicit):
            self.sqs.call(
                spec.name, self.sqs.client.tag_queue, QueueUrl=url, Tags=_spec_tags(spec, implicit)
            )
            return spec
        if implicit:
            return stored
        stored.check_same(spec)
        return stored

    def _find(self, queue: str, name: str) -> str | None:
        with self._lock:
            url = self._urls.get(name)
        if url is not None:
            return url
        try:
            url = self.sqs.call(queue, self.sqs.client.get_queue_url, QueueName=name)["QueueUrl"]
        except QueueMissing:
            return None
        with self._lock:
            self._urls[name] = url
        return url

    def _create(self, queue: str, name: str, attrs: dict[str, str], tags: dict[str, str]) -> str:
        try:
            url = self.sqs.call(
                queue,
                self.sqs.client.create_queue,
                QueueName=name,
                Attributes={"MessageRetentionPeriod": RETENTION, **attrs},  # type: ignore[dict-item]
                tags=tags,
            )["QueueUrl"]
        except SQSError as exc:
            if "AlreadyExists" not in exc.code:
                raise
            # Made earlier with other attributes (another lease): use it as it is.
            url = self.sqs.call(queue, self.sqs.client.get_queue_url, QueueName=name)["QueueUrl"]
        with self._lock:
            self._urls[name] = url
        return url

    def dlq_url(self, spec: QueueSpec) -> str:
        name = dlq_name(self.prefix, spec.name)
        url = self._find(spec.name, name)
        return url or self._create(spec.name, name, {}, _spec_tags(spec, True))

    def lane_url(self, spec: QueueSpec, lane: Lane, create: bool) -> str | None:
        """The SQS URL of a lane; made first when ``create``, else None if it is missing."""
        name = lane_name(self.prefix, lane)
        with self._lock:
            url = self._urls.get(name)
        if url is not None:
            return url
        if create:
            tags = {_TAG + "queue": lane.queue, _TAG + "priority": str(lane.priority)}
            if lane.tenant is not None:
                tags[_TAG + "tenant"] = lane.tenant
            visibility = str(whole_seconds(spec.lease, MAX_VISIBILITY) or 1)
            url = self._create(spec.name, name, {"VisibilityTimeout": visibility}, tags)
        else:
            url = self._find(spec.name, name)
            if url is None:
                return None
        with self._lock:
            self._known.setdefault(spec.name, set()).add(lane)
        return url

    def forget(self, spec: QueueSpec, lane: Lane) -> None:
        """A lane's SQS queue vanished (deleted by hand): stop using its cached URL."""
        with self._lock:
            self._urls.pop(lane_name(self.prefix, lane), None)
            self._known.get(spec.name, set()).discard(lane)

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        found: set[Lane] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"QueueNamePrefix": lane_prefix(self.prefix, spec.name)}
            kwargs["MaxResults"] = 1000
            if token:
                kwargs["NextToken"] = token
            page = self.sqs.call(spec.name, self.sqs.client.list_queues, **kwargs)
            for url in page.get("QueueUrls", []):
                lane = self._lane_of(spec, url)
                if lane is not None:
                    found.add(lane)
                    with self._lock:
                        self._urls[lane_name(self.prefix, lane)] = url
            token = page.get("NextToken")
            if not token:
                break
        with self._lock:
            # ListQueues on AWS lags new queues by seconds: add the lanes made here.
            found |= self._known.get(spec.name, set())
        return sorted(found, key=lambda lane: (-lane.priority, lane.tenant or ""))

    def _lane_of(self, spec: QueueSpec, url: str) -> Lane | None:
        name = url.rsplit("/", 1)[-1]
        parsed = parse_lane(self.prefix, spec.name, name)
        if parsed is None:
            return None
        priority, tenant, hashed = parsed
        if hashed:
            if url not in self._tag_tenants:
                try:
                    tags = self.sqs.call(spec.name, self.sqs.client.list_queue_tags, QueueUrl=url)
                except QueueMissing:
                    return None
                self._tag_tenants[url] = tags.get("Tags", {}).get(_TAG + "tenant")
            tenant = self._tag_tenants[url]
            if tenant is None or lane_name(self.prefix, Lane(spec.name, tenant, priority)) != name:
                return None
        return Lane(spec.name, tenant, priority)

    # -- publishing -----------------------------------------------------------------

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        now = time.time()
        by_lane: dict[Lane, list[tuple[SendMessageBatchRequestEntryTypeDef, int]]] = {}
        for msg in messages:
            entry, size = self._entry(spec, msg, now)
            by_lane.setdefault(msg.lane, []).append((entry, size))
        for lane, entries in by_lane.items():
            try:
                url = self.lane_url(spec, lane, create=True)
                assert url is not None
                for batch in _size_batches(entries):
                    self.send_batch(spec, url, batch)
            except (SQSError, BrokerUnavailable) as exc:
                raise PublishError(
                    f"publishing to queue {spec.name!r} (lane tenant={lane.tenant!r}, "
                    f"priority={lane.priority}) failed: {exc}"
                ) from exc

    def _entry(
        self, spec: QueueSpec, msg: Outgoing, now: float
    ) -> tuple[SendMessageBatchRequestEntryTypeDef, int]:
        text, encoding = encode_body(msg.body)
        meta = outgoing_meta(msg, encoding, now)
        attrs = attributes(meta)
        size = message_size(text, attrs[ATTRIBUTE]["StringValue"])
        if size > MAX_MESSAGE:
            how = "base64-encoded binary body" if encoding == "b" else "body"
            raise MessageTooLarge(
                f"message {msg.id} for queue {spec.name!r} is {size} bytes in SQS ({how} plus "
                f"workq metadata); SQS accepts at most {MAX_MESSAGE}: store the payload "
                "elsewhere and publish a reference to it"
            )
        entry: SendMessageBatchRequestEntryTypeDef = {
            "Id": "0",
            "MessageBody": text,
            "MessageAttributes": attrs,
        }
        delay = whole_seconds(msg.delay, MAX_DELAY)
        if delay:
            entry["DelaySeconds"] = delay
        return entry, size

    def delete_batch(self, spec: QueueSpec, url: str, handles: Sequence[str]) -> None:
        """DeleteMessageBatch of up to ten receipt handles (copies already sent on)."""
        self.sqs.call(
            spec.name,
            self.sqs.client.delete_message_batch,
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)],
        )

    def send_batch(
        self, spec: QueueSpec, url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
    ) -> None:
        """SendMessageBatch, re-sending only the entries SQS failed on its side."""
        pending = [dict(entry, Id=str(i)) for i, entry in enumerate(entries)]

        def attempt() -> None:
            nonlocal pending
            resp = self.sqs.call(
                spec.name,
                self.sqs.client.send_message_batch,
                QueueUrl=url,
                Entries=pending,  # type: ignore[arg-type]
            )
            failed = resp.get("Failed", [])
            if not failed:
                return
            for f in failed:
                if f.get("SenderFault"):
                    raise PublishError(
                        f"SQS refused a message for queue {spec.name!r}: {f.get('Code')}: "
                        f"{f.get('Message')}"
                    )
            ids = {f["Id"] for f in failed}
            pending = [e for e in pending if e["Id"] in ids]
            raise _PartialFailure(f"{len(ids)} of the batch failed: {failed[0].get('Code')}")

        retrying = Retrying(
            retry=retry_if_exception_type(_PartialFailure),
            stop=stop_after_attempt(self.settings.publish_retries + 1),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        try:
            retrying(attempt)
        except _PartialFailure as exc:
            raise PublishError(
                f"SQS did not accept every message for queue {spec.name!r} after "
                f"{self.settings.publish_retries} retries ({exc}); none of the failed ones "
                "was sent: publish them again"
            ) from None

    # -- consuming ------------------------------------------------------------------

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return SQSReceiver(self, spec)

    def wait_seconds(self, timeout: float) -> int:
        """Long-poll wait for a receive allowed ``timeout`` seconds.

        Rounded up to a whole second, as SQS takes whole seconds: polling without waiting
        for a sub-second timeout would spin and burn requests.
        """
        if timeout <= 0:
            return 0
        return min(self.settings.wait_time_seconds, max(1, math.ceil(timeout - 0.05)))

    def note_released(self, message_id: str) -> None:
        """A release made a receive that was not an attempt: remember to discount it."""
        with self._lock:
            self._released[message_id] = self._released.pop(message_id, 0) + 1
            while len(self._released) > 10000:
                self._released.popitem(last=False)

    def released(self, message_id: str) -> int:
        with self._lock:
            return self._released.get(message_id, 0)

    def defer(self, spec: QueueSpec, url: str, late: Sequence[tuple[Any, Meta]]) -> None:
        """Messages due later than SQS's 15-minute delay allows: send them on again, in
        batches, then delete the early copies."""
        now = time.time()
        entries: list[tuple[SendMessageBatchRequestEntryTypeDef, int]] = []
        for message, meta in late:
            attrs = attributes(meta)
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": "0",
                "MessageBody": message["Body"],
                "MessageAttributes": attrs,
                "DelaySeconds": whole_seconds((meta.not_before or 0) - now, MAX_DELAY),
            }
            entries.append((entry, message_size(message["Body"], attrs[ATTRIBUTE]["StringValue"])))
        for batch in _size_batches(entries):
            self.send_batch(spec, url, batch)
        self.delete_batch(spec, url, [message["ReceiptHandle"] for message, _ in late])

    def change_visibility(self, queue: str, tokens: Sequence[_Token], seconds: int) -> None:
        """ChangeMessageVisibilityBatch in tens, per SQS queue."""
        by_url: dict[str, list[_Token]] = {}
        for token in tokens:
            by_url.setdefault(token.url, []).append(token)
        for url, group in by_url.items():
            for chunk in _chunks(group):
                try:
                    resp = self.sqs.call(
                        queue,
                        self.sqs.client.change_message_visibility_batch,
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": t.handle, "VisibilityTimeout": seconds}
                            for i, t in enumerate(chunk)
                        ],
                    )
                except QueueMissing:
                    continue
                for failed in resp.get("Failed", []):
                    log.debug("visibility change on %s not applied: %s", url, failed.get("Code"))

    # -- inspection -----------------------------------------------------------------

    def stats(self, spec: QueueSpec) -> QueueStats:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        out = []
        for lane in self.lanes(spec):
            url = self.lane_url(spec, lane, create=False)
            if url is None:
                continue
            try:
                attrs = self._attributes(spec, url, names)
            except QueueMissing:
                continue
            out.append(LaneStats(lane, *(int(attrs.get(n, 0)) for n in names)))
        dlq = self._find(spec.name, dlq_name(self.prefix, spec.name))
        dead = 0
        if dlq is not None:
            attrs = self._attributes(spec, dlq, names[:2])
            dead = sum(int(attrs.get(n, 0)) for n in names[:2])
        return QueueStats(queue=spec.name, lanes=out, dead_letters=dead)

    def _attributes(self, spec: QueueSpec, url: str, names: list[str]) -> dict[str, str]:
        resp = self.sqs.call(
            spec.name,
            self.sqs.client.get_queue_attributes,
            QueueUrl=url,
            AttributeNames=names,  # type: ignore[arg-type]
        )
        return {str(k): v for k, v in resp.get("Attributes", {}).items()}

    def _read_dlq(self, spec: QueueSpec, url: str, hide: int, limit: int) -> list[Any]:
        seen: dict[str, Any] = {}
        while len(seen) < limit:
            resp = self.sqs.call(
                spec.name,
                self.sqs.client.receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=BATCH,
                VisibilityTimeout=hide,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
            )
            fresh = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not fresh:
                break
            for m in fresh:
                seen[m["MessageId"]] = m
        return list(seen.values())

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        url = self._find(spec.name, dlq_name(self.prefix, spec.name))
        if url is None or limit <= 0:
            return []
        # Receiving is the only way to read SQS: hide briefly, then show them again at once.
        messages = self._read_dlq(spec, url, hide=30, limit=limit + 100)
        try:
            letters = []
            for m in messages:
                meta = Meta.load(m)
                item = received(meta.lane(spec.name), m, meta, None)
                letters.append(
                    (
                        meta.dead_at or item.enqueued_at,
                        DeadLetter(
                            id=meta.id,
                            queue=spec.name,
                            tenant=meta.tenant,
                            priority=meta.priority,
                            body=item.body,
                            headers=item.headers,
                            reason=meta.reason or "unknown",
                            attempt=meta.dead_attempt or item.attempt,
                            enqueued_at=meta.enqueued_at,
                        ),
                    )
                )
        finally:
            tokens = [_Token(url, m["ReceiptHandle"], m["MessageId"]) for m in messages]
            self.change_visibility(spec.name, tokens, 0)
        letters.sort(key=lambda pair: pair[0])
        return [letter for _, letter in letters[:limit]]

    def redrive(self, spec: QueueSpec) -> int:
        url = self._find(spec.name, dlq_name(self.prefix, spec.name))
        if url is None:
            return 0
        moved = 0
        while True:
            messages = self._read_dlq(spec, url, hide=60, limit=BATCH)
            if not messages:
                return moved
            by_lane: dict[Lane, list[tuple[SendMessageBatchRequestEntryTypeDef, int]]] = {}
            for m in messages:
                meta = Meta.load(m)
                meta.reason = meta.dead_attempt = meta.dead_at = meta.not_before = None
                meta.attempt_base = 0
                attrs = attributes(meta)
                entry: SendMessageBatchRequestEntryTypeDef = {
                    "Id": "0",
                    "MessageBody": m["Body"],
                    "MessageAttributes": attrs,
                }
                size = message_size(m["Body"], attrs[ATTRIBUTE]["StringValue"])
                by_lane.setdefault(meta.lane(spec.name), []).append((entry, size))
            for lane, entries in by_lane.items():
                lane_url = self.lane_url(spec, lane, create=True)
                assert lane_url is not None
                for batch in _size_batches(entries):
                    self.send_batch(spec, lane_url, batch)
            self.delete_batch(spec, url, [m["ReceiptHandle"] for m in messages])
            moved += len(messages)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.deleter.close()
        finally:
            self.sqs.close()


def _size_batches(
    entries: Sequence[tuple[SendMessageBatchRequestEntryTypeDef, int]],
) -> Iterator[list[SendMessageBatchRequestEntryTypeDef]]:
    """Batches of at most 10 entries and SQS's total payload limit."""
    batch: list[SendMessageBatchRequestEntryTypeDef] = []
    total = 0
    for entry, size in entries:
        if batch and (len(batch) == BATCH or total + size > MAX_MESSAGE):
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += size
    if batch:
        yield batch


def _spec_tags(spec: QueueSpec, implicit: bool) -> dict[str, str]:
    tags = {_TAG + f: str(getattr(spec, f)).lower() for f in QueueSpec.SETTINGS}
    tags[_TAG + "implicit"] = "true" if implicit else "false"
    return tags


def _spec_from_tags(queue: str, tags: dict[str, str]) -> tuple[QueueSpec | None, bool]:
    if not all(_TAG + f in tags for f in QueueSpec.SETTINGS):
        return None, False
    try:
        spec = QueueSpec(
            queue,
            max_priority=int(tags[_TAG + "max_priority"]),
            max_attempts=int(tags[_TAG + "max_attempts"]),
            retry_delay=float(tags[_TAG + "retry_delay"]),
            lease=float(tags[_TAG + "lease"]),
            dead_letter=tags[_TAG + "dead_letter"] == "true",
        )
    except (ValueError, ConfigurationError):
        return None, False
    return spec, tags.get(_TAG + "implicit") == "true"


def _levels(lanes: Iterable[Lane]) -> list[list[Lane]]:
    """Consecutive lanes of one priority, in the order given."""
    levels: list[list[Lane]] = []
    for lane in lanes:
        if levels and levels[-1][0].priority == lane.priority:
            levels[-1].append(lane)
        else:
            levels.append([lane])
    return levels


class SQSReceiver(Receiver):
    """One consumer's receives: short polls in lane order, then one long poll.

    Strict priority needs every higher lane checked before a lower one, and SQS cannot
    long-poll several queues in one request. So a receive asks each lane of the highest
    level in turn (WaitTimeSeconds=0, the count spread over the level's lanes), goes down
    a level only when a whole level is empty, and when every lane is empty long-polls the
    lane that last had messages (else the top one). A single lane is long-polled at once.
    """

    def __init__(self, driver: SQSDriver, spec: QueueSpec) -> None:
        self._d = driver
        self._spec = spec
        self._visibility = whole_seconds(spec.lease, MAX_VISIBILITY) or 1
        self._held: dict[int, _Token] = {}
        self._lock = threading.Lock()
        self._likely: Lane | None = None
        self._closed = False

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        lanes = list(lanes)
        if self._closed or max_count <= 0 or not lanes:
            return []
        wait = self._d.wait_seconds(timeout)
        if len(lanes) == 1:
            return self._poll(lanes[0], max_count, wait)
        for level in _levels(lanes):
            got: list[Received] = []
            for i, lane in enumerate(level):
                share = math.ceil((max_count - len(got)) / (len(level) - i))
                if share > 0:
                    got += self._poll(lane, share, 0)
            if got:
                return got
        if not wait:
            return []
        lane = self._likely if self._likely in lanes else lanes[0]
        return self._poll(lane, max_count, wait)

    def _poll(self, lane: Lane, count: int, wait: int) -> list[Received]:
        url = self._d.lane_url(self._spec, lane, create=False)
        if url is None:
            return []
        try:
            resp = self._d.sqs.call(
                self._spec.name,
                self._d.sqs.client.receive_message,
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
        out: list[Received] = []
        late: list[tuple[Any, Meta]] = []
        now = time.time()
        for m in resp.get("Messages", []):
            meta = Meta.load(m)
            if meta.not_before is not None and meta.not_before > now + 0.5:
                late.append((m, meta))
                continue
            token = _Token(url, m["ReceiptHandle"], m["MessageId"])
            out.append(received(lane, m, meta, token, self._d.released(m["MessageId"])))
        if late:
            self._d.defer(self._spec, url, late)
        with self._lock:
            closed = self._closed
            if not closed:
                for item in out:
                    self._held[id(item.token)] = item.token
        if closed and out:
            # Closed while this receive was in flight: give them straight back.
            self._give_back([item.token for item in out])
            return []
        if out:
            self._likely = lane
        return out

    def _settling(self, item: Received) -> _Token:
        token: _Token = item.token
        with self._lock:
            self._held.pop(id(token), None)
        return token

    def ack(self, item: Received) -> None:
        token = self._settling(item)
        self._d.deleter.add(token.url, token.handle)

    def nack(self, item: Received, delay: float | None) -> None:
        token = self._settling(item)
        seconds = whole_seconds(delay, MAX_VISIBILITY + 1)
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

    def _delete(self, token: _Token) -> None:
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
        self._d.sqs.call(
            self._spec.name,
            self._d.sqs.client.send_message,
            QueueUrl=self._d.dlq_url(self._spec),
            MessageBody=text,
            MessageAttributes=attributes(meta),
        )
        self._delete(token)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        with self._lock:
            tokens = [i.token for i in items if id(i.token) in self._held]
        if tokens:
            self._d.change_visibility(
                self._spec.name, tokens, whole_seconds(seconds, MAX_VISIBILITY) or 1
            )

    def release(self, items: Sequence[Received]) -> None:
        tokens = [self._settling(item) for item in items]
        self._give_back(tokens)

    def _give_back(self, tokens: Sequence[_Token]) -> None:
        if not tokens:
            return
        for token in tokens:
            self._d.note_released(token.message_id)
        self._d.change_visibility(self._spec.name, tokens, 0)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held = list(self._held.values())
            self._held.clear()
        try:
            self._give_back(held)
        finally:
            self._d.deleter.flush()
