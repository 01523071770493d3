"""The sync driver's declarations: workq's objects, adopting existing queues, the registry.

All of it runs on the I/O thread (``client.py``); ``pika_driver.py`` mixes it in.
See ``topology.py`` for the names and arguments.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika.exceptions

from ...errors import BrokerUnavailable
from ...lanes import Lane
from ...spec import QueueSpec
from .client import IOThread
from .codec import Envelope
from .connection import SYNC_TIMEOUT
from .settings import RabbitMQSettings
from .topology import (
    DELAY_REDECLARE,
    DLX_PROBE,
    Declared,
    Registry,
    Topology,
    config_error,
    delay_record,
    lane_record,
    meta_queue,
    own_dlx,
)

__all__ = ["Declarations", "declaring"]

log = logging.getLogger("workq.rabbitmq")


def declaring(ch_fn: Callable[[], Any], topo_name: str, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn`` on a channel, turning the broker's refusals into workq's errors."""
    try:
        return fn(ch_fn())
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406:
            raise config_error(topo_name, exc.reply_text) from None
        if exc.reply_code == 404:
            # A replicated queue whose node is down or still recovering: transient.
            raise BrokerUnavailable(
                f"queue {topo_name!r} is not available right now ({exc.reply_text}); "
                "retry once the node or its replicas are back"
            ) from exc
        raise


class Declarations:
    """Declaring and reading a queue's objects; mixed into :class:`RabbitMQDriver`."""

    io: IOThread
    settings: RabbitMQSettings
    #: Lane queues that existed with other arguments, and their own dead-letter
    #: exchange (None: workq's dead-letter queue serves them).
    adopted: dict[str, str | None]
    #: Lane queues this driver has declared or adopted, across reconnects.
    lanes_made: set[str]

    def _ensure_base(self, topo: Topology) -> None:
        io = self.io
        if io.declared.fresh(topo.exchange):
            return

        default = Lane(topo.name)
        # The lane queue first: if it cannot be had, nothing else is made.
        declaring(io.admin, topo.name, lambda _ch: self._lane_queue(topo, default))

        def run(ch: Any) -> None:
            ch.exchange_declare(topo.exchange, "direct", durable=True)
            ch.exchange_declare(topo.dlx, "fanout", durable=True)
            ch.exchange_declare(topo.delay_exchange, "headers", durable=True)
            ch.queue_declare(topo.dlq, durable=True, arguments=topo.queue_args())
            ch.queue_bind(topo.dlq, topo.dlx)
            ch.queue_bind(topo.lane_queue(default), topo.exchange, topo.routing_key(default))

        declaring(io.admin, topo.name, run)
        declaring(
            io.admin,
            topo.name,
            lambda ch: ch.queue_declare(topo.meta, durable=True, arguments=topo.queue_args()),
        )
        io.declared.mark(topo.exchange)
        io.declared.mark(topo.lane_queue(Lane(topo.name)))

    def _lane_queue(self, topo: Topology, lane: Lane) -> None:
        """Declare a lane queue, or adopt it as it is if it exists with other arguments
        (a queue another team made: classic or quorum, its own limits and DLX kept)."""
        io = self.io
        qname = topo.lane_queue(lane)
        try:
            io.admin().queue_declare(qname, durable=True, arguments=topo.lane_args())
            self.lanes_made.add(qname)
            return
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            why = exc.reply_text
        try:
            io.admin().queue_declare(
                qname, durable=True, arguments={"x-dead-letter-exchange": DLX_PROBE}
            )
            dlx = None  # unreachable in practice: no queue has the probe as its DLX
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            dlx = own_dlx(exc.reply_text)
        self.adopted[qname] = None if dlx == topo.dlx else dlx
        self.lanes_made.add(qname)
        log.info(
            "queue %r: lane queue %r exists with other arguments (%s); adopted as it is, "
            "dead letters going to %s",
            topo.name,
            qname,
            why,
            f"its own exchange {dlx!r}" if self.adopted[qname] else repr(topo.dlq),
        )

    def _ensure_lanes(self, topo: Topology, lanes: set[Lane], delays: set[int]) -> None:
        """Declare missing lane and delay queues, and record them in the registry."""
        io = self.io
        out: list[bytes] = []
        for lane in sorted(lanes, key=lambda ln: (ln.tenant or "", ln.priority)):
            qname = topo.lane_queue(lane)
            if io.declared.fresh(qname):
                continue
            phys = topo.physical(lane)

            def run(_ch: Any, qname: str = qname, phys: Lane = phys) -> None:
                self._lane_queue(topo, phys)
                io.admin().queue_bind(qname, topo.exchange, topo.routing_key(phys))

            declaring(io.admin, topo.name, run)
            io.declared.mark(qname)
            out.append(lane_record(phys))
        for ms in sorted(delays):
            qname = topo.delay_queue(ms)
            if io.declared.fresh(qname, DELAY_REDECLARE):
                continue

            def run_delay(ch: Any, qname: str = qname, ms: int = ms) -> None:
                ch.queue_declare(qname, durable=True, arguments=topo.delay_args(ms))
                ch.queue_bind(qname, topo.delay_exchange, "", arguments=topo.delay_binding(ms))

            declaring(io.admin, topo.name, run_delay)
            fresh = qname not in io.declared.names
            io.declared.mark(qname)
            if fresh:
                out.append(delay_record(ms))
        if out:
            try:
                self._registry(topo, write=out)
            except BrokerUnavailable as exc:
                # Messages still flow to the lane; record it again on the next publish.
                log.warning("queue %r: recording new lanes failed: %s", topo.name, exc)
                io.declared = Declared()

    def _inspect(self, spec: QueueSpec) -> QueueSpec | None:
        if not self._exists(self.settings.queue_prefix + spec.name):
            return None
        return self._stored_spec(spec.name) or spec

    def _stored_spec(self, name: str) -> QueueSpec | None:
        """The spec in an existing registry of ``name``, read without declaring anything
        (declaring with defaults would clash with a queue declared differently)."""
        io = self.io
        ch = io.channel()
        try:
            try:
                ch.queue_declare(meta_queue(self.settings.queue_prefix + name), passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None  # never declared: the defaults apply
                raise
            reg = Registry(name)
            while True:
                method, _props, body = ch.basic_get(
                    meta_queue(self.settings.queue_prefix + name), auto_ack=False
                )
                if method is None:
                    return reg.spec
                reg.add(body)
        finally:
            with contextlib.suppress(Exception):
                if ch.is_open:
                    ch.close()  # what was read goes back

    def _registry(self, topo: Topology, write: Sequence[bytes] = ()) -> Registry:
        """Read the queue's registry (and add ``write`` to it); I/O thread only.

        The registry is a small queue of records, each a set of facts; the union of all
        of them is the registry. Reading gets every record and puts it back; writing
        publishes one merged record (confirmed) and only then acks the ones it replaces.
        A record held by a concurrent reader is missed this time and seen the next.
        """
        io = self.io
        reg = io.regs.get(topo.name)
        if reg is None:
            reg = io.regs[topo.name] = Registry(topo.name)
        self._ensure_base(topo)
        ch = io.channel()
        try:
            last = None
            while True:
                method, _props, body = declaring(
                    lambda: ch, topo.name, lambda c: c.basic_get(topo.meta, auto_ack=False)
                )
                if method is None:
                    break
                last = method.delivery_tag
                reg.add(body)
            if write:
                for body in write:
                    reg.add(body)
                batch = io.publish([Envelope("", topo.meta, reg.dump(), mandatory=False)])
                deadline = time.monotonic() + SYNC_TIMEOUT
                while not batch.done.is_set():
                    if time.monotonic() > deadline:
                        raise BrokerUnavailable(
                            f"queue {topo.name!r}: no confirm for its registry record "
                            f"within {SYNC_TIMEOUT}s"
                        )
                    io.connection().process_data_events(time_limit=0.02)
                if batch.errors:
                    raise BrokerUnavailable(
                        f"queue {topo.name!r}: writing its registry record failed "
                        f"({next(iter(batch.errors.values()))})"
                    )
                if last is not None:
                    ch.basic_ack(last, multiple=True)
        finally:
            with contextlib.suppress(Exception):
                if ch.is_open:
                    ch.close()  # what was read and not replaced goes back
        return reg

    def _exists(self, queue: str) -> bool:
        """Whether ``queue`` exists, asked on a channel of its own (a no closes it)."""
        ch = self.io.channel()
        try:
            ch.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise
        finally:
            with contextlib.suppress(Exception):
                if ch.is_open:
                    ch.close()
