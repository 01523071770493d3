"""``sqs://REGION?endpoint_url=...``: workq on Amazon SQS (or an SQS-compatible server).

One standard SQS queue per lane (see :mod:`.naming`; the default lane is named as the
queue), plus ``<queue>_dlq`` which holds dead letters and carries the queue's declared
settings as tags, and ``<queue>_bell``, the doorbell (:mod:`.doorbell`). This module
declares, adopts and publishes; lanes are found and named in :mod:`.directory`;
requests go in batches of 10 (:mod:`.batching`);
receiving and settling are in :mod:`.receiver`, dead letters in :mod:`.deadletters`.
The visibility timeout is the lease; the core's lease keeper extends it. The async API
runs this driver on threads (``workq.driver.threaded``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...declarations import Stored, adopt_or_conflict
from ...driver import Capabilities, DeadLetter, Driver, LaneStats, Outgoing, QueueStats, Receiver
from ...errors import BrokerUnavailable, PublishError
from ...lanes import Lane
from ...producer import MessageTooLarge
from ...spec import QueueSpec
from .batching import (
    Deleter,
    Token,
    change_visibility,
    delete_batch,
    send_batch,
    size_batches,
)
from .client import QueueMissing, SQSCalls, SQSError
from .codec import (
    MAX_DELAY,
    MAX_MESSAGE,
    Meta,
    attributes,
    encode_body,
    message_size,
    outgoing_meta,
    whole_seconds,
)
from .deadletters import Existing, read_dead_letters, redrive
from .directory import Directory
from .doorbell import Doorbell
from .naming import (
    dlq_name,
    queue_of_dlq,
    spec_from_tags,
    spec_tags,
)
from .receiver import SQSReceiver
from .settings import SQSSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

__all__ = ["SQSDriver", "create_driver"]

log = logging.getLogger("workq.sqs")


def create_driver(settings: SQSSettings) -> SQSDriver:
    """Connect and check that SQS answers, so a wrong endpoint fails here, clearly."""
    driver = SQSDriver(settings)
    try:
        driver.sqs.call("*", driver.sqs.client.list_queues, MaxResults=1)
    except BaseException:
        driver.close()
        raise
    return driver


class SQSDriver(Directory, Driver):
    """A connection to SQS: lanes are SQS queues, the visibility timeout is the lease."""

    def __init__(self, settings: SQSSettings) -> None:
        super().__init__(settings, SQSCalls(settings))
        self.settings = settings
        self.capabilities = Capabilities(
            backend="sqs",
            lease_model="lease",
            max_body_size=MAX_MESSAGE,
            lane_refresh=settings.lane_refresh,
            receive_batch=100,
        )
        self.deleter = Deleter(self.sqs, settings.ack_linger)
        self._existing: dict[str, Existing] = {}
        self.doorbell = Doorbell(self)
        self._closed = False

    # -- queues ---------------------------------------------------------------------

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        """Store the spec as tags of the queue's dead-letter queue, or check it matches.

        A default lane that exists already (made by another team, or by a plain client)
        is adopted: its visibility timeout is the lease of an implicit declaration, and
        with a ``RedrivePolicy`` of its own, its dead-letter queue takes the dead letters
        and its ``maxReceiveCount`` is ``max_attempts``; workq then makes no queue of its
        own.
        """
        spec.check_options("sqs")
        existing = self._existing_default(spec)
        if existing is not None and existing.redrive_to is not None:
            return existing.adopt(spec) if implicit else spec
        name = dlq_name(self.prefix, spec.name)
        url = self.find(spec.name, name)
        if url is None:
            if implicit and existing is not None:
                spec = existing.adopt(spec)
            self.create(spec.name, name, {}, spec_tags(spec, implicit))
            return spec
        stored = self._stored(spec, url)
        effective, write = adopt_or_conflict(stored, spec, implicit)
        if write is not None:
            self.sqs.call(
                spec.name,
                self.sqs.client.tag_queue,
                QueueUrl=url,
                Tags=spec_tags(write.spec, write.implicit),
            )
        return effective

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """The queue exists if its default lane or workq's dead-letter queue does: the
        stored spec, else the default lane's settings adopted (see :meth:`declare`)."""
        existing = self._existing_default(spec)
        if existing is not None and existing.redrive_to is not None:
            return existing.adopt(spec)
        url = self.find(spec.name, dlq_name(self.prefix, spec.name))
        if url is None:
            return None if existing is None else existing.adopt(spec)
        stored = self._stored(spec, url)
        return spec if stored is None else stored.spec

    def _stored(self, spec: QueueSpec, dlq_url: str) -> Stored | None:
        """The declaration stored in the tags of the queue's dead-letter queue."""
        tags = self.sqs.call(spec.name, self.sqs.client.list_queue_tags, QueueUrl=dlq_url)
        stored_spec, was_implicit = spec_from_tags(spec.name, tags.get("Tags", {}))
        return None if stored_spec is None else Stored(stored_spec, was_implicit)

    def _existing_default(self, spec: QueueSpec) -> Existing | None:
        """The queue's default lane as it exists on SQS, or None if it does not."""
        if not self.exact:
            return None
        url = self.find(spec.name, self.name_of(Lane(spec.name)))
        if url is None:
            return None
        try:
            attrs = self._attributes(spec, url, ["VisibilityTimeout", "RedrivePolicy"])
        except QueueMissing:
            return None
        existing = Existing.of(attrs)
        with self._lock:
            self._existing[spec.name] = existing
        return existing

    def dlq_url(self, spec: QueueSpec, fresh: bool = False) -> str:
        """The URL of the queue's dead-letter queue, made if missing; ``fresh`` skips the
        cache (the cached URL turned out stale)."""
        name = self.dlq_of(spec)
        if fresh:
            with self._lock:
                self._urls.pop(name, None)
        url = self.find(spec.name, name)
        if url is None and name != dlq_name(self.prefix, spec.name):
            raise QueueMissing(
                f"the dead-letter queue {name!r} of queue {spec.name!r} (its RedrivePolicy) "
                "does not exist: create it, or fix the RedrivePolicy"
            )
        return url or self.create(spec.name, name, {}, spec_tags(spec, True))

    def dlq_of(self, spec: QueueSpec) -> str:
        """The SQS name of the queue's dead-letter queue: its own RedrivePolicy's target
        when it was adopted with one, else workq's ``<queue>_dlq``."""
        with self._lock:
            existing = self._existing.get(spec.name)
        if existing is not None and existing.redrive_to is not None:
            return existing.redrive_to
        return dlq_name(self.prefix, spec.name)

    # -- publishing -----------------------------------------------------------------

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        now = time.time()
        by_lane: dict[Lane, list[tuple[SendMessageBatchRequestEntryTypeDef, int]]] = {}
        for msg in messages:
            entry, size = self._entry(spec, msg, now)
            by_lane.setdefault(msg.lane, []).append((entry, size))
        started = time.monotonic()
        sent: list[tuple[Lane, float]] = []
        for lane, entries in by_lane.items():
            self._publish_lane(spec, lane, entries)
            sent.append((lane, min(float(e.get("DelaySeconds", 0)) for e, _ in entries)))
        # Within what is left of publish_timeout: a note is only a hint.
        remaining = self.settings.publish_timeout - (time.monotonic() - started)
        self.doorbell.ring(spec.name, sent, remaining)

    def _publish_lane(
        self,
        spec: QueueSpec,
        lane: Lane,
        entries: list[tuple[SendMessageBatchRequestEntryTypeDef, int]],
    ) -> None:
        batches = list(size_batches(entries))
        try:
            try:
                self._send_lane(spec, lane, batches)
            except QueueMissing as exc:
                # Deleted out of band, or the endpoint lost its state: make it again
                # (its cached URL is stale) and send what was not sent yet.
                log.warning(
                    "SQS queue of lane (tenant=%r, priority=%d) of queue %r vanished "
                    "(%s); declaring it again",
                    lane.tenant,
                    lane.priority,
                    spec.name,
                    exc,
                )
                self.forget(spec, lane)
                self._send_lane(spec, lane, batches[exc.sent :])
        except (SQSError, BrokerUnavailable) as exc:
            raise PublishError(
                f"publishing to queue {spec.name!r} (lane tenant={lane.tenant!r}, "
                f"priority={lane.priority}) failed: {exc}"
            ) from exc

    def _send_lane(
        self, spec: QueueSpec, lane: Lane, batches: list[list[SendMessageBatchRequestEntryTypeDef]]
    ) -> None:
        url = self.lane_url(spec, lane, create=True)
        assert url is not None
        for sent, batch in enumerate(batches):
            try:
                self.send_batch(spec, url, batch)
            except QueueMissing as exc:
                exc.sent = sent
                raise

    def _entry(
        self, spec: QueueSpec, msg: Outgoing, now: float
    ) -> tuple[SendMessageBatchRequestEntryTypeDef, int]:
        text, encoding = encode_body(msg.body)
        meta = outgoing_meta(msg, encoding, now)
        attrs = attributes(meta)
        size = message_size(text, attrs)
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

    def resend(self, spec: QueueSpec, url: str, messages: Sequence[Outgoing]) -> None:
        """Send messages again to the SQS queue ``url`` they were received from."""
        now = time.time()
        entries = [self._entry(spec, msg, now) for msg in messages]
        for batch in size_batches(entries):
            self.send_batch(spec, url, batch)

    def send_batch(
        self, spec: QueueSpec, url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
    ) -> None:
        send_batch(self.sqs, spec.name, url, entries)

    def delete_batch(self, spec: QueueSpec, url: str, handles: Sequence[str]) -> None:
        """Delete received copies (already sent on, or settled) by receipt handle."""
        delete_batch(self.sqs, spec.name, url, handles)

    def change_visibility(self, queue: str, tokens: Sequence[Token], seconds: int) -> None:
        change_visibility(self.sqs, queue, tokens, seconds)

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
            entries.append((entry, message_size(message["Body"], attrs)))
        for batch in size_batches(entries):
            self.send_batch(spec, url, batch)
        self.delete_batch(spec, url, [message["ReceiptHandle"] for message, _ in late])

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
        dlq = self.find(spec.name, self.dlq_of(spec))
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

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        return read_dead_letters(self, spec, limit)

    def redrive(self, spec: QueueSpec) -> int:
        return redrive(self, spec)

    def queues(self) -> list[str]:
        """The queues whose dead-letter queue (``<queue>_dlq``) carries workq's settings
        tags: every queue workq declared. One adopted with a ``RedrivePolicy`` of its
        own has no such queue, and is not listed."""
        urls: dict[str, str] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 1000}
            if self.prefix:
                kwargs["QueueNamePrefix"] = self.prefix
            if token:
                kwargs["NextToken"] = token
            page = self.sqs.call("*", self.sqs.client.list_queues, **kwargs)
            urls.update((url.rsplit("/", 1)[-1], url) for url in page.get("QueueUrls", []))
            token = page.get("NextToken")
            if not token:
                break
        found = []
        for name, url in urls.items():
            queue = queue_of_dlq(self.prefix, name, urls)
            if queue is None:
                continue
            try:
                tags = self.sqs.call(queue, self.sqs.client.list_queue_tags, QueueUrl=url)
            except QueueMissing:  # deleted since it was listed
                continue
            if spec_from_tags(queue, tags.get("Tags", {}))[0] is not None:
                found.append(queue)
        return sorted(found)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.deleter.close()
        finally:
            self.sqs.close()
