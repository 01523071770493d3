"""The sync RabbitMQ driver on pika: declarations, the registry, publishing.

Every call runs on the I/O thread of ``client.py``. See ``topology.py`` for how queues,
lanes, delays and dead letters map onto RabbitMQ, and ``codec.py`` for messages.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pika.exceptions

from ...driver import DeadLetter, Driver, LaneStats, Outgoing, QueueStats, Received, Receiver
from ...errors import ConfigurationError, PublishError
from ...lanes import Lane
from ...retrying import PUBLISH
from ...spec import QueueSpec
from .client import IOThread
from .codec import (
    ATTEMPT,
    copy_of,
    envelope,
    reason_of,
    received,
    routed_envelope,
    routed_failure,
)
from .confirms import UNROUTABLE, Batch
from .connection import CAPABILITIES, SYNC_TIMEOUT, Deadline, lanes_bound, not_confirmed
from .management import list_queues
from .pika_declare import Declarations
from .plan import delays_to_declare, lanes_to_declare
from .settings import RabbitMQSettings
from .topology import (
    Declared,
    Topology,
    check_declared,
    delay_ms,
    queue_type,
    spec_record,
)

if TYPE_CHECKING:
    from .receiver import RabbitMQReceiver

__all__ = ["RabbitMQDriver", "pika_received"]

log = logging.getLogger("workq.rabbitmq")

#: Messages per pipelined part of one publish (see ``RabbitMQDriver.publish_to``).
PUBLISH_PART = 50
NO_CONFIRM = "no confirm within publish_timeout"


def pika_received(
    topo: Topology,
    props: Any,
    body: bytes,
    redelivered: bool = False,
    token: Any = None,
    queue: str | None = None,
) -> Received:
    """A :class:`Received` from a pika delivery's properties (``queue``: where from)."""
    return received(
        topo,
        body=body,
        headers=props.headers,
        message_id=props.message_id,
        priority=props.priority,
        redelivered=redelivered,
        timestamp=props.timestamp,
        token=token,
        content_type=props.content_type,
        queue=queue,
    )


class _Retry(Exception):
    """A publish attempt left some messages unconfirmed; try those again."""


def _settled(batch: Batch) -> Future[Batch]:
    fut: Future[Batch] = Future()
    fut.set_result(batch)
    return fut


class RabbitMQDriver(Declarations, Driver):
    """The sync RabbitMQ driver (pika, one I/O thread per driver)."""

    capabilities = CAPABILITIES

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.io = IOThread(settings)
        self._topos: dict[str, Topology] = {}
        #: Lane queues that existed with other arguments, and their own dead-letter
        #: exchange (None: workq's dead-letter queue serves them).
        self.adopted: dict[str, str | None] = {}
        self.lanes_made: set[str] = set()
        try:
            self.io.call(self.io.connection, timeout=settings.connect_timeout + 1.0)
        except BaseException:
            self.io.close()
            raise

    # -- topology (I/O thread) -----------------------------------------------------------

    def topology(self, spec: QueueSpec) -> Topology:
        topo = self._topos.get(spec.name)
        if topo is None or topo.max_priority != spec.max_priority:
            topo = Topology.of(spec, self.settings.queue_type, self.settings.queue_prefix)
            self._topos[spec.name] = topo
        return topo

    # -- Driver API ----------------------------------------------------------------------

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """See :meth:`Driver.inspect`: the default lane queue must exist (made by workq
        or not); the spec is its registry's, else ``spec``."""
        return self.io.call(lambda: self._inspect(spec), timeout=SYNC_TIMEOUT)

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        def op() -> QueueSpec:
            if implicit and (stored := self._stored_spec(spec.name)) is not None:
                # Adopt what was declared elsewhere, declaring it the same way.
                self._ensure_base(
                    Topology.of(stored, self.settings.queue_type, self.settings.queue_prefix)
                )
                return stored
            kind = queue_type(spec, self.settings.queue_type)
            topo = Topology.of(spec, self.settings.queue_type, self.settings.queue_prefix)
            reg = self._registry(topo)
            if reg.spec is None or (not implicit and reg.explicit is None):
                reg = self._registry(topo, write=[spec_record(spec, kind, implicit)])
            if implicit:
                return reg.spec or spec
            if reg.explicit is not None:  # None only while the registry is unavailable
                check_declared(reg.explicit, spec, kind)
            return spec

        effective: QueueSpec = self.io.call(op, timeout=SYNC_TIMEOUT * 3)
        self._topos[spec.name] = Topology.of(
            effective, self.settings.queue_type, self.settings.queue_prefix
        )
        return effective

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        self.publish_to(self.topology(spec), messages)

    def publish_to(
        self, topo: Topology, messages: Sequence[Outgoing], dead: str | None = None
    ) -> None:
        """Publish and wait for every confirm, retrying what is not confirmed (bounded)."""
        if not messages:
            return
        lanes = {m.lane for m in messages}
        delays = {delay_ms(m.delay) for m in messages if m.delay and dead is None}
        left = list(range(len(messages)))
        errors: dict[int, str] = {}
        io = self.io

        def ensure() -> None:
            self._ensure_base(topo)
            self._ensure_lanes(topo, lanes, delays)

        # New lanes are declared first, on a bound of their own (declaring a thousand
        # quorum queues takes longer than a publish): failures here are left to the
        # attempts below, which declare again and report them.
        # (Lanes declared before, even on an earlier connection, are declared again
        # inside the attempts, within publish_timeout.)
        new = sum(topo.lane_queue(ln) not in self.lanes_made for ln in lanes)
        try:
            if new:
                io.submit(ensure).result(lanes_bound(new))
        except ConfigurationError:
            raise
        except Exception as exc:
            log.info("queue %r: declaring lanes before publishing failed: %r", topo.name, exc)
        # One bound for the rest of the call, retries included.
        deadline = Deadline(self.settings.publish_timeout)

        def attempt() -> None:
            nonlocal left, errors

            def op(part: list[int]) -> Batch:
                self._ensure_base(topo)
                self._ensure_lanes(topo, lanes, delays)
                batch = io.publish([envelope(topo, messages[i], dead) for i in part])
                io.pump()  # on the wire now, not after every queued part is encoded
                return batch

            # Handed to the I/O thread in parts without waiting, so the broker works on
            # the first part while later ones are still being encoded; then every
            # confirm is awaited. (Encoding on the I/O thread: this thread would hold the
            # GIL while building every part before the first one could be sent.)
            parts = [left[i : i + PUBLISH_PART] for i in range(0, len(left), PUBLISH_PART)]
            sent: list[tuple[list[int], Future[Batch]]] = []
            failed: list[tuple[int, str]] = []
            cause: BaseException | None = None
            if len(parts) == 1:
                # One part, its queues declared and the connection free: sent from this
                # thread, a wake-up of the I/O thread sooner (see IOThread.publish_here).
                part = parts[0]
                try:
                    here = io.publish_here(
                        lambda: self._declared(topo, lanes, delays),
                        lambda: [envelope(topo, messages[i], dead) for i in part],
                    )
                except ConfigurationError:
                    raise
                except Exception as exc:
                    failed += [(i, repr(exc)) for i in part]
                    cause = exc
                    parts = []
                else:
                    if here is not None:
                        sent.append((part, _settled(here)))
                        parts = []
            for part in parts:
                try:
                    sent.append((part, io.submit(functools.partial(op, part))))
                except Exception as exc:
                    failed += [(i, repr(exc)) for i in part]
                    cause = exc
            for part, fut in sent:
                try:
                    batch = fut.result(deadline.left())
                except ConfigurationError:
                    raise
                except Exception as exc:
                    fut.cancel()  # not started yet: never sent after this call gave up
                    failed += [(i, repr(exc)) for i in part]
                    cause = exc
                    continue
                if not io.confirmed(batch, deadline.left()):
                    failed += [(i, NO_CONFIRM) for i in part]
                    continue
                failed += [(part[i], err) for i, err in batch.errors.items()]
            if cause is not None:
                log.warning("queue %r: publish failed (%r); retrying", topo.name, cause)
            if any("unroutable" in err for _, err in failed):
                io.declared = Declared()
            errors = dict(failed)
            left = [i for i, _ in failed]
            if any(err == NO_CONFIRM for _, err in failed):
                # Silence, not a refusal: the connection may be dead without knowing it.
                io.post(functools.partial(io.drop, NO_CONFIRM))
            elif any("nacked" in err for _, err in failed):
                # A channel's quorum-queue session can stay stuck on a lost leader: retry
                # on a fresh channel.
                io.post(io.reset_pub)
            if left:
                log.warning(
                    "queue %r: %d message(s) not confirmed (%s); retrying",
                    topo.name,
                    len(left),
                    next(iter(errors.values())),
                )
                raise _Retry() from cause

        try:
            self._attempts(attempt, deadline)
        except _Retry as exc:
            sample = next(iter(errors.values()), "unknown")
            raise PublishError(
                not_confirmed(
                    self.settings, f"queue {topo.name!r}", len(left), len(messages), sample
                )
            ) from exc.__cause__

    def _declared(self, topo: Topology, lanes: set[Lane], delays: set[int]) -> bool:
        """Whether this connection needs no declaration for a publish (I/O lock held)."""
        declared = self.io.declared
        return (
            declared.fresh(topo.exchange)
            and not lanes_to_declare(topo, lanes, declared)
            and not delays_to_declare(topo, delays, declared)
        )

    def _attempts(self, attempt: Callable[[], None], deadline: Deadline) -> None:
        """Run ``attempt`` until it does not raise ``_Retry``: ``publish_retries`` times
        more at most, within ``publish_timeout``, backing off in between."""
        try:
            attempt()  # the first try outside tenacity: most publishes need no other
            return
        except _Retry as exc:
            first: _Retry | None = exc
        for retry in PUBLISH.retrying(
            _Retry, attempts=self.settings.publish_retries + 1, deadline=deadline
        ):
            with retry:
                if first is not None:
                    # Counted as tenacity's first try, so bounds and backoff are as before.
                    failure, first = first, None
                    raise failure
                attempt()

    def publish_routed(self, exchange: str, routing_key: str, messages: Sequence[Outgoing]) -> None:
        """See :meth:`Driver.publish_routed`: retried as ``publish`` is, except a message
        the broker returns (no queue took it) or a missing exchange, which no retry mends."""
        entries = [routed_envelope(exchange, routing_key, m) for m in messages]
        io = self.io
        deadline = Deadline(self.settings.publish_timeout)
        last = NO_CONFIRM

        def op() -> Batch:
            batch = io.publish(entries)
            io.pump()
            return batch

        def attempt() -> None:
            nonlocal entries, last
            try:
                # Straight from this thread when the connection is free (as publish_to).
                here = None
                if len(entries) <= PUBLISH_PART:
                    here = io.publish_here(lambda: True, lambda: entries)
                batch = here or io.submit(op).result(deadline.left())
            except Exception as exc:
                last = repr(exc)
                raise _Retry() from exc
            if not io.confirmed(batch, deadline.left()):
                io.post(functools.partial(io.drop, NO_CONFIRM))
                raise _Retry()
            for err in batch.errors.values():
                if why := routed_failure(exchange, routing_key, err == UNROUTABLE, err):
                    raise PublishError(why)
            if batch.errors:
                last = next(iter(batch.errors.values()))
                io.post(io.reset_pub)
                entries = [entries[i] for i in sorted(batch.errors)]
                raise _Retry()

        try:
            self._attempts(attempt, deadline)
        except _Retry as exc:
            target = f"exchange {exchange!r} (routing key {routing_key!r})"
            raise PublishError(
                not_confirmed(self.settings, target, len(entries), len(messages), last)
            ) from exc.__cause__

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        topo = self.topology(spec)

        return self.io.call(lambda: topo.known_lanes(self._registry(topo)))

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return self.open_topology(self.topology(spec), prefetch)

    def open_topology(self, topo: Topology, prefetch: int) -> RabbitMQReceiver:
        """A receiver of ``topo``, a topology decided elsewhere (by the ``workq.aio``
        driver whose consumers receive through this one)."""
        from .receiver import RabbitMQReceiver

        return RabbitMQReceiver(self, topo, prefetch)

    def stats(self, spec: QueueSpec) -> QueueStats:
        topo = self.topology(spec)

        def op() -> QueueStats:
            registry = self._registry(topo)
            ch = self.io.admin()
            out = []
            for lane in topo.known_lanes(registry):
                ok = ch.queue_declare(topo.lane_queue(lane), passive=True)
                out.append(LaneStats(lane, ok.method.message_count, 0))
            delayed = 0
            for ms in registry.delays:
                try:
                    delayed += ch.queue_declare(
                        topo.delay_queue(ms), passive=True
                    ).method.message_count
                except pika.exceptions.ChannelClosedByBroker:
                    ch = self.io.admin()  # expired delay queue: nothing in it
            if delayed and out:
                out[0] = LaneStats(out[0].lane, out[0].ready, out[0].in_flight, delayed)
            dead = ch.queue_declare(topo.dlq, passive=True).method.message_count
            return QueueStats(queue=topo.name, lanes=out, dead_letters=dead)

        return self.io.call(op)

    def _read_dlq(
        self, topo: Topology, limit: int, take: bool
    ) -> list[tuple[Any, Any, Any, bytes]]:
        """Get up to ``limit`` dead letters on a fresh channel; requeue them unless ``take``."""
        ch = self.io.channel()
        got: list[tuple[Any, Any, bytes]] = []
        try:
            while len(got) < limit:
                method, props, body = ch.basic_get(topo.dlq, auto_ack=False)
                if method is None:
                    break
                got.append((method, props, body))
            if not take:
                ch.basic_nack(0, multiple=True, requeue=True)
        except BaseException:
            with contextlib.suppress(Exception):
                ch.close()
            raise
        if not take:
            ch.close()
        return [(ch, m, p, b) for m, p, b in got]

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        topo = self.topology(spec)
        if limit <= 0:
            return []

        def op() -> list[DeadLetter]:
            self._ensure_base(topo)
            out = []
            for _ch, _m, props, body in self._read_dlq(topo, limit, take=False):
                item = pika_received(topo, props, body)
                out.append(
                    DeadLetter(
                        id=item.id,
                        queue=topo.name,
                        tenant=item.lane.tenant,
                        priority=item.lane.priority,
                        body=body,
                        headers=item.headers,
                        reason=reason_of(props.headers),
                        attempt=int((props.headers or {}).get(ATTEMPT, 1)),
                        enqueued_at=item.enqueued_at,
                    )
                )
            return out

        return self.io.call(op)

    def redrive(self, spec: QueueSpec) -> int:
        topo = self.topology(spec)
        moved = 0
        while True:

            def take() -> list[Any]:
                self._ensure_base(topo)
                return self._read_dlq(topo, 100, take=True)

            got = self.io.call(take)
            if not got:
                return moved
            ch = got[0][0]
            msgs = [copy_of(pika_received(topo, p, b), attempt=1) for _ch, _m, p, b in got]
            try:
                self.publish_to(topo, msgs)
            except BaseException:
                self.io.call(ch.close)  # unacked: back to the dead-letter queue
                raise
            last = got[-1][1].delivery_tag

            def done(ch: Any = ch, last: int = last) -> None:
                ch.basic_ack(last, multiple=True)
                ch.close()

            self.io.call(done)
            moved += len(got)

    def queues(self) -> list[str]:
        """From the management HTTP API (AMQP cannot list queues); see management.py."""
        return list_queues(self.settings)

    def close(self) -> None:
        self.io.close()
