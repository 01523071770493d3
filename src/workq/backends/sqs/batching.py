"""Batched SQS requests: sends, deletes, visibility changes, and the ack-batching thread.

SQS takes at most 10 entries per batch request and 256 KiB per batch payload. Acks are
buffered for ``ack_linger`` seconds by :class:`Deleter` so that acks arriving together
share one ``DeleteMessageBatch``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import PublishError
from ...retrying import PUBLISH
from .client import QueueMissing, SQSCalls
from .codec import MAX_MESSAGE

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

__all__ = [
    "BATCH",
    "Deleter",
    "Token",
    "change_visibility",
    "chunks",
    "delete_batch",
    "send_batch",
    "size_batches",
]

log = logging.getLogger("workq.sqs")

BATCH = 10


@dataclass(slots=True, eq=False)
class Token:
    """What a receiver needs to settle one delivery."""

    url: str
    handle: str
    message_id: str


def chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def size_batches(
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


class _PartialFailure(Exception):
    pass


def send_batch(
    sqs: SQSCalls, queue: str, url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
) -> None:
    """SendMessageBatch, re-sending only the entries SQS failed on its side."""
    pending = [dict(entry, Id=str(i)) for i, entry in enumerate(entries)]

    def attempt() -> None:
        nonlocal pending
        resp = sqs.call(
            queue,
            sqs.client.send_message_batch,
            QueueUrl=url,
            Entries=pending,  # type: ignore[arg-type]
        )
        failed = resp.get("Failed", [])
        if not failed:
            return
        for f in failed:
            if f.get("SenderFault"):
                raise PublishError(
                    f"SQS refused a message for queue {queue!r}: {f.get('Code')}: "
                    f"{f.get('Message')}"
                )
        ids = {f["Id"] for f in failed}
        pending = [e for e in pending if e["Id"] in ids]
        raise _PartialFailure(f"{len(ids)} of the batch failed: {failed[0].get('Code')}")

    retries = sqs.settings.publish_retries
    try:
        PUBLISH.retrying(_PartialFailure, attempts=retries + 1)(attempt)
    except _PartialFailure as exc:
        raise PublishError(
            f"SQS did not accept every message for queue {queue!r} after {retries} retries "
            f"({exc}); none of the failed ones was sent: publish them again"
        ) from None


def delete_batch(sqs: SQSCalls, queue: str, url: str, handles: Sequence[str]) -> None:
    """DeleteMessageBatch of receipt handles, in tens."""
    for chunk in chunks(handles):
        sqs.call(
            queue,
            sqs.client.delete_message_batch,
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
        )


def change_visibility(sqs: SQSCalls, queue: str, tokens: Sequence[Token], seconds: int) -> None:
    """ChangeMessageVisibilityBatch in tens, per SQS queue."""
    by_url: dict[str, list[Token]] = {}
    for token in tokens:
        by_url.setdefault(token.url, []).append(token)
    for url, group in by_url.items():
        for chunk in chunks(group):
            try:
                resp = sqs.call(
                    queue,
                    sqs.client.change_message_visibility_batch,
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


class Deleter:
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
