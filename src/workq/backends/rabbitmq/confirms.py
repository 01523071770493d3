"""Publisher confirms of the sync driver's confirm channel: which delivery tag is which
message of which batch, and what the broker's acks, nacks and returns settle.

Used only on the I/O thread of ``client.py``, which owns the channel; this holds the
bookkeeping, so a publish is sent whole and settled as its confirms arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pika.spec

from .codec import Envelope
from .frames import Wire

__all__ = ["UNROUTABLE", "Batch", "Confirms"]

#: The error of a message the broker returned (mandatory): no queue took it.
UNROUTABLE = "unroutable: returned by the broker, no queue took it"
#: Message ids remembered for matching returns; past this the map starts afresh.
MAX_TRACKED = 100_000


class Batch:
    """Confirms of one pipelined publish; ``done`` is set once every entry is settled."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.errors: dict[int, str] = {}
        self.done = threading.Event()
        if size == 0:
            self.done.set()

    def settle(self, index: int, error: str | None) -> bool:
        """Settle one entry; True once all are (then ``done`` is for the caller to set)."""
        if error is not None:
            self.errors.setdefault(index, error)
        self.left -= 1
        return self.left == 0


class Confirms:
    """The delivery tags in flight on one confirm channel and the batches they settle."""

    def __init__(self) -> None:
        self._tag = 0
        self._pending: dict[int, tuple[Batch, int]] = {}
        self._by_mid: dict[str, int] = {}
        self._returned: set[int] = set()
        #: Where settled batches go instead of being set at once (``defer``).
        self._deferred: list[Batch] | None = None

    def defer(self, into: list[Batch] | None) -> None:
        """Collect the batches settled from now on in ``into`` (None: set them at once).

        The I/O thread reads confirms holding the GIL and the connection: a publisher
        woken then would only wait for both. It sets the batches it collected once it
        has let go of them (see ``IOThread._serve_once``).
        """
        self._deferred = into

    def _settle(self, batch: Batch, index: int, error: str | None) -> None:
        if batch.settle(index, error):
            if self._deferred is None:
                batch.done.set()
            else:
                self._deferred.append(batch)

    def fail(self, error: str) -> None:
        """Settle everything in flight with ``error`` (the channel or connection is gone,
        so those confirms will never come: the publish retries or raises)."""
        pending, self._pending = self._pending, {}
        self._by_mid.clear()
        self._returned.clear()
        for batch, index in pending.values():
            self._settle(batch, index, error)

    def restart(self, error: str) -> None:
        """A new confirm channel: fail what the old one had, count tags from one."""
        self.fail(error)
        self._tag = 0

    def send(self, wire: Wire, entries: Sequence[Envelope]) -> Batch:
        """Write ``entries`` on the confirm channel; the batch settles on their confirms.

        If this raises, tags and what was written no longer agree: the caller must
        start a fresh channel (which fails what is pending, so nothing is lost).
        """
        batch = Batch(len(entries))
        pending, by_mid = self._pending, self._by_mid
        for index, e in enumerate(entries):
            self._tag += 1
            pending[self._tag] = (batch, index)
            if e.mandatory and e.message_id:
                by_mid[e.message_id] = self._tag
            wire.publish(e)
        wire.flush()
        if len(self._by_mid) > MAX_TRACKED:
            self._by_mid.clear()
        return batch

    def on_return(self, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        """A mandatory message came back: its confirm (which follows) is a failure."""
        tag = self._by_mid.get(props.message_id or "")
        if tag is not None:
            self._returned.add(tag)

    def on_confirm(self, frame: Any) -> None:
        """An ack or nack, of one tag or (``multiple``) of every tag up to it."""
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        last = method.delivery_tag
        if method.multiple:
            # Tags are pending in increasing order: stop at the first one not covered.
            tags = []
            for t in self._pending:
                if t > last:
                    break
                tags.append(t)
        else:
            tags = [last]
        for tag in tags:
            entry = self._pending.pop(tag, None)
            if entry is None:
                continue
            batch, index = entry
            if not ok:
                self._settle(batch, index, "nacked by the broker (queue full or internal error)")
            elif tag in self._returned:
                self._returned.discard(tag)
                self._settle(batch, index, UNROUTABLE)
            else:
                self._settle(batch, index, None)
