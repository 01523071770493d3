"""The dead-letter side of SQS: adopting a queue's own RedrivePolicy, and reading and
redriving dead letters (receiving is the only way to read an SQS queue)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from ...driver import DeadLetter
from ...lanes import Lane
from ...spec import QueueSpec
from .batching import BATCH, Token, size_batches
from .codec import SYSTEM_ATTRIBUTES, Meta, attributes, message_size, received

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from .driver import SQSDriver

__all__ = ["MOVED_BY_SQS", "Existing", "read_dead_letters", "redrive"]

#: The reason of a dead letter SQS moved itself (a queue's own RedrivePolicy).
MOVED_BY_SQS = "moved by SQS after maxReceiveCount receives (the queue's RedrivePolicy)"


@dataclasses.dataclass(frozen=True, slots=True)
class Existing:
    """What workq adopts of a default lane queue that exists already."""

    visibility: int
    redrive_to: str | None = None
    max_receive: int | None = None

    @classmethod
    def of(cls, attrs: dict[str, str]) -> Existing:
        visibility = int(attrs.get("VisibilityTimeout", 0) or 0)
        policy = attrs.get("RedrivePolicy")
        if not policy:
            return cls(visibility)
        data = json.loads(policy)
        # arn:aws:sqs:REGION:ACCOUNT:NAME
        target = str(data.get("deadLetterTargetArn", "")).rsplit(":", 1)[-1] or None
        return cls(visibility, target, int(data.get("maxReceiveCount", 0)) or None)

    def adopt(self, spec: QueueSpec) -> QueueSpec:
        """``spec`` with the lease and attempts the existing queue says."""
        lease = float(self.visibility) if self.visibility > 0 else spec.lease
        attempts = self.max_receive or spec.max_attempts
        return dataclasses.replace(spec, lease=lease, max_attempts=attempts)


def _read_dlq(d: SQSDriver, spec: QueueSpec, url: str, hide: int, limit: int) -> list[Any]:
    seen: dict[str, Any] = {}
    while len(seen) < limit:
        resp = d.sqs.call(
            spec.name,
            d.sqs.client.receive_message,
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


def read_dead_letters(d: SQSDriver, spec: QueueSpec, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first; reading hides them for a moment."""
    url = d.find(spec.name, d.dlq_of(spec))
    if url is None or limit <= 0:
        return []
    # Receiving is the only way to read SQS: hide briefly, then show them again at once.
    messages = _read_dlq(d, spec, url, hide=30, limit=limit + 100)
    try:
        letters = []
        for m in messages:
            meta = Meta.load(m)
            item = received(meta.lane(spec.name), m, meta, None)
            if meta.dead_attempt:
                item.attempt = meta.dead_attempt
            letter = DeadLetter.of(item, meta.reason or MOVED_BY_SQS)
            letters.append((meta.dead_at or item.enqueued_at, letter))
    finally:
        tokens = [Token(url, m["ReceiptHandle"], m["MessageId"]) for m in messages]
        d.change_visibility(spec.name, tokens, 0)
    letters.sort(key=lambda pair: pair[0])
    return [letter for _, letter in letters[:limit]]


def redrive(d: SQSDriver, spec: QueueSpec) -> int:
    """Move every dead letter back to its lane, attempt starting again at 1."""
    url = d.find(spec.name, d.dlq_of(spec))
    if url is None:
        return 0
    moved = 0
    while True:
        messages = _read_dlq(d, spec, url, hide=60, limit=BATCH)
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
            size = message_size(m["Body"], attrs)
            by_lane.setdefault(meta.lane(spec.name), []).append((entry, size))
        for lane, entries in by_lane.items():
            lane_url = d.lane_url(spec, lane, create=True)
            assert lane_url is not None
            for batch in size_batches(entries):
                d.send_batch(spec, lane_url, batch)
        d.delete_batch(spec, url, [m["ReceiptHandle"] for m in messages])
        moved += len(messages)
