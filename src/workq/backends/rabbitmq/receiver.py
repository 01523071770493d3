"""The sync RabbitMQ receiver: subscribed by push to every lane its consumer reads.

What to subscribe, cancel, hand out and give back is decided in ``subscriptions.py``,
shared with the aio-pika receiver; this module does the pika I/O, on the driver's I/O
thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pika.exceptions

from ...driver import Received, Receiver
from ...lanes import Lane
from .client import GONE
from .codec import copy_of
from .frames import Wire, forget, on_close, subscribe, unsubscribe
from .pika_driver import pika_received
from .subscriptions import Subscriptions
from .topology import Topology

if TYPE_CHECKING:
    from .pika_driver import RabbitMQDriver

__all__ = ["RabbitMQReceiver"]

log = logging.getLogger("workq.rabbitmq")


class RabbitMQReceiver(Receiver):
    """One consumer: a channel of its own, pushed to by every lane queue it reads."""

    def __init__(self, driver: RabbitMQDriver, topo: Topology, prefetch: int) -> None:
        self._driver = driver
        self._io = driver.io
        self._topo = topo
        self._cond = threading.Condition()
        self._subs = Subscriptions(topo, prefetch)
        self._channel: Any = None
        self._gen = -1
        self._closed = False
        #: Counts what wakes a receive (a delivery, a closed channel or connection).
        self._events = 0
        self._acks: list[Received] = []
        self._ack_lock = threading.Lock()
        #: The caller-thread writer of ``_wire_of`` (see ``_ack_here``).
        self._wire: Wire | None = None
        self._wire_of: Any = None
        self._io.on_lost.append(self._on_lost)

    def _on_lost(self) -> None:
        with self._cond:
            self._subs.reset()  # unacked on a dead channel: the broker requeues them
            self._channel = None
            self._wake()

    def _wake(self) -> None:
        """Wake a receive waiting for what just happened (``_cond`` held): one waiting
        on the condition, or one reading the connection itself (``IOThread.lead``)."""
        self._events += 1
        self._cond.notify_all()
        self._io.wake_leader()

    def _stale(self) -> bool:
        ch = self._channel
        return ch is None or not ch.is_open or self._gen != self._io.generation

    # -- I/O thread ------------------------------------------------------------------------

    def _chan(self) -> Any:
        if self._stale():
            self._io.connection()
            channel = self._io.channel()
            on_close(channel, self._on_close)
            with self._cond:
                self._subs.reset()  # what the old channel held, the broker has back
            self._channel, self._gen = channel, self._io.generation
        return self._channel

    def _on_close(self, _ch: Any, reason: Exception) -> None:
        with self._cond:
            self._subs.closed(str(reason))
            self._wake()  # a receive waiting on this channel starts afresh

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        tag = method.consumer_tag
        queue = self._subs.queue_of(tag)
        token = (self._gen, self._channel, method.delivery_tag, queue)
        item = pika_received(self._topo, props, body, bool(method.redelivered), token, queue)
        with self._cond:
            self._subs.pushed(tag, item)
            self._wake()

    def _apply(self, lanes: Sequence[Lane]) -> list[Received]:
        """Subscribe the lanes not yet subscribed, cancel those no longer read; returns
        what the cancelled ones had pushed, to give back."""
        ch = self._chan()
        subs = self._subs
        with self._cond:
            changes = subs.changes(lanes)
        for q in changes.probe:
            exists = self._driver._exists(q)
            with self._cond:
                subs.probed(q, exists)
        with self._cond:
            if changes.probe:
                changes = subs.changes(lanes)
            cancel = [subs.tags[q] for q in changes.cancel]
            released = [item for q in changes.cancel for item in subs.cancelled(q)]
            new = [(q, subs.subscribe(q)) for q in changes.consume]
            credit = changes.credit if subs.credit != changes.credit else None
        if cancel:
            unsubscribe(ch, cancel)
        if new:
            self._driver._ensure_base(self._topo)
            if credit is not None:
                # Per consumer (not global): it applies to the subscriptions made after it.
                ch.basic_qos(prefetch_count=credit)
                subs.credit = credit
            subscribe(ch, new, self._on_message)
        return released

    def _get(self, levels: list[list[str]], max_count: int) -> None:
        """``basic.get`` up to ``max_count`` from ``levels``, a level at a time, one from
        each lane in turn; what comes in joins what was pushed."""
        ch = self._chan()
        subs, cond, n = self._subs, self._cond, 0
        for level in levels:
            live = list(level)
            while live and n < max_count:
                for q in list(live):
                    if n >= max_count:
                        break
                    try:
                        method, props, body = ch.basic_get(q, auto_ack=False)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        # A lane queue deleted under us: the channel is gone; the next
                        # receive starts afresh on a new one, without that lane.
                        with cond:
                            subs.reset()
                            subs.closed(str(exc))
                        return
                    item = None
                    if method is None:
                        live.remove(q)
                    else:
                        token = (self._gen, ch, method.delivery_tag, q)
                        item = pika_received(
                            self._topo, props, body, bool(method.redelivered), token, q
                        )
                        n += 1
                    with cond:
                        subs.got(q, item)
            if n >= max_count:
                return

    def _cancel_all(self) -> list[Received]:
        """Cancel every subscription; returns everything pushed and not handed out."""
        if self._stale():
            with self._cond:
                self._subs.reset()  # the channel is gone: the broker has them back
            return []
        ch = self._channel
        with self._cond:
            tags = self._subs.cancel_all()
        if tags:
            unsubscribe(ch, tags)
            # A round trip: once it is back, every cancel is done and what was pushed
            # before it has reached _on_message (pika dispatches while it waits).
            ch.basic_qos(prefetch_count=self._subs.credit or 1)
            forget(ch, tags)
        with self._cond:
            self._subs.forget(tags)
            return self._subs.drain()

    # -- Receiver API (any thread) ------------------------------------------------------

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        if not lanes:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        subs, cond = self._subs, self._cond
        while True:
            with cond:
                apply = self._stale() or bool(subs.changes(lanes))
            if apply and not self._closed:
                released = self._io.call(lambda: self._apply(lanes))
                if released:
                    self._give_back(released)
            with cond:
                out, gets = subs.next(lanes, max_count)
                idle = not out and not gets and not self._closed
                seen = self._events
            if idle:
                left = max(deadline - time.monotonic(), 0.0)
                # Read on this thread if it can, else woken by the I/O thread.
                if not self._io.lead(functools.partial(self._woken, seen), left):
                    with self._io.waiting(), cond:
                        if self._events == seen:
                            cond.wait(max(deadline - time.monotonic(), 0.0))
                with cond:
                    out, gets = subs.next(lanes, max_count)
            with cond:
                strays = subs.strays()
            if strays:
                self._give_back(strays)
            if gets and not self._closed:
                # Each pass either brings messages in or finds lanes empty: it ends.
                self._io.call(functools.partial(self._get, gets, max_count))
                continue
            if out or time.monotonic() >= deadline or self._closed:
                return out

    def _woken(self, seen: int) -> bool:
        """Whether something that ends a wait happened since ``_events`` was ``seen``."""
        return self._events != seen

    def _ack_now(self, item: Received, reject: bool = False) -> None:
        gen, channel, tag, _queue = item.token
        if gen != self._io.generation or channel is not self._channel or not channel.is_open:
            log.info("delivery %s came from a lost channel: the broker redelivers it", item.id)
            return
        if reject:
            channel.basic_reject(tag, requeue=False)
        else:
            channel.basic_ack(tag)

    def ack(self, item: Received, wait: bool = True) -> None:
        """Ack ``item``; ``wait=False`` never waits for the connection (an event loop's
        call: the ack then goes to the I/O thread if the connection is busy)."""
        # Fire and forget: a lost ack means a redelivery, which at-least-once allows.
        # Written on this thread when the connection is free and no ack waits for the
        # I/O thread: at prefetch 1 the next delivery waits for this ack, and handing
        # it over would cost a wake-up of the I/O thread first.
        if not self._acks and self._io.here(functools.partial(self._ack_here, item), wait):
            return
        # Else acks wait in a list; the first one in an empty list asks the I/O thread
        # to send them all, each acking exactly its own delivery tag, in one write.
        with self._ack_lock:
            self._acks.append(item)
            if len(self._acks) > 1:
                return
        self._io.post(self._send_acks)

    def _ack_here(self, item: Received) -> bool:
        """Write the ack of ``item`` now (connection held, any thread); False if its
        channel is not the current one: the I/O thread's path says why it is dropped."""
        channel = self._channel
        gen, ch, tag, _queue = item.token
        if ch is not channel or gen != self._gen or self._gen != self._io.generation:
            return False
        if channel is None or not channel.is_open:
            return False
        wire = self._wire
        if wire is None or self._wire_of is not channel:
            wire = self._wire = Wire(channel, direct=True)
            self._wire_of = channel
        try:
            wire.ack(tag)
            wire.flush()
        except Exception as exc:
            # Perhaps partly written: never written again (a second ack of a tag
            # closes the channel). Lost, it is redelivered.
            log.info("ack of delivery %s failed (%r): the broker redelivers it", item.id, exc)
        return True

    def _send_acks(self) -> None:
        with self._ack_lock:
            items, self._acks = self._acks, []
        channel = self._channel
        if channel is None or self._gen != self._io.generation or not channel.is_open:
            for item in items:
                self._ack_now(item)  # each logged as coming from a lost channel
            return
        wire = Wire(channel)
        for item in items:
            gen, ch, tag, _queue = item.token
            if gen != self._gen or ch is not channel:
                self._ack_now(item)
            else:
                wire.ack(tag)
        wire.flush()

    def nack(self, item: Received, delay: float | None) -> None:
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt + 1, delay)])
        self._io.call(lambda: self._ack_now(item))

    def dead_letter(self, item: Received, reason: str) -> None:
        if self._driver.adopted.get(item.token[3] or ""):
            # An adopted queue with a dead-letter exchange of its own: the broker routes
            # it there, as the queue's owner set up.
            self._io.call(lambda: self._ack_now(item, reject=True))
            return
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt)], dead=reason)
        self._io.call(lambda: self._ack_now(item))

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: RabbitMQ holds a delivery as long as its channel lives."""

    def release(self, items: Sequence[Received]) -> None:
        # The subscriptions stop first: once the originals are acked the broker would
        # push again (the copies, say), and what it pushed would be returned, and
        # counted, when the channel closes. The next receive() subscribes again.
        if self._subs.tags:
            items = [*items, *self._io.call(self._cancel_all)]
        self._give_back(items)

    def _give_back(self, items: Sequence[Received]) -> None:
        if not items:
            return
        # Re-published with the same attempt, then acked: a plain requeue would count
        # as a delivery on quorum queues (x-delivery-count) and as "redelivered" on classic.
        self._driver.publish_to(self._topo, [copy_of(i, i.attempt) for i in items])

        def acks() -> None:
            for item in items:
                self._ack_now(item)

        self._io.call(acks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._wake()
        try:
            leftover = self._io.call(self._cancel_all)
            if leftover:
                self._give_back(leftover)
        except GONE:
            pass  # the connection is gone, so the broker has requeued everything
        finally:

            def shut() -> None:
                if self._channel is not None and self._channel.is_open:
                    self._channel.close()
                self._channel = None

            with contextlib.suppress(Exception):
                self._io.call(shut)
            with contextlib.suppress(ValueError):
                self._io.on_lost.remove(self._on_lost)
