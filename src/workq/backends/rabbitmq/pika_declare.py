"""The sync driver's declarations: workq's objects, adopting existing queues, the registry.

All of it runs on the I/O thread (``client.py``); ``pika_driver.py`` mixes it in.
See ``topology.py`` for the names and arguments.
"""

from __future__ import annotations

import contextlib
import functools
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
from .plan import (
    Exchange,
    Queue,
    Rules,
    Step,
    base_steps,
    delay_steps,
    delays_to_declare,
    lane_bind,
    lanes_to_declare,
)
from .settings import RabbitMQSettings
from .topology import (
    DLX_PROBE,
    Declared,
    Registry,
    Topology,
    config_error,
    delay_record,
    lane_record,
    meta_queue,
)

__all__ = ["Declarations", "apply", "declaring"]

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


def apply(ch: Any, steps: Sequence[Step]) -> None:
    """Declare ``steps`` (see ``plan.py``) on a pika channel, in order."""
    for step in steps:
        if isinstance(step, Exchange):
            ch.exchange_declare(step.name, step.kind, durable=True)
        elif isinstance(step, Queue):
            ch.queue_declare(step.name, durable=True, arguments=step.arguments)
        else:
            ch.queue_bind(step.queue, step.exchange, step.routing_key, arguments=step.arguments)


class Declarations(Rules):
    """Declaring and reading a queue's objects; mixed into :class:`RabbitMQDriver`."""

    io: IOThread
    settings: RabbitMQSettings

    def _ensure_base(self, topo: Topology) -> None:
        io = self.io
        if io.declared.fresh(topo.exchange):
            return
        default = Lane(topo.name)
        declaring(io.admin, topo.name, lambda _ch: self._lane_queue(topo, default))
        declaring(io.admin, topo.name, lambda ch: apply(ch, base_steps(topo)))
        io.declared.mark(topo.exchange)
        io.declared.mark(topo.lane_queue(default))

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
            reply = None  # unreachable in practice: no queue has the probe as its DLX
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            reply = exc.reply_text
        self._adopt(topo, qname, why, reply)

    def _ensure_lanes(self, topo: Topology, lanes: set[Lane], delays: set[int]) -> None:
        """Declare missing lane and delay queues, and record them in the registry."""
        io = self.io
        out: list[bytes] = []
        for phys in lanes_to_declare(topo, lanes, io.declared):

            def run(_ch: Any, phys: Lane = phys) -> None:
                self._lane_queue(topo, phys)
                apply(io.admin(), [lane_bind(topo, phys)])

            declaring(io.admin, topo.name, run)
            io.declared.mark(topo.lane_queue(phys))
            out.append(lane_record(phys))
        for ms in delays_to_declare(topo, delays, io.declared):
            qname = topo.delay_queue(ms)
            declaring(io.admin, topo.name, functools.partial(apply, steps=delay_steps(topo, ms)))
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
