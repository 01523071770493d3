"""The aio driver's declarations: the twin of ``pika_declare.py`` on aio-pika."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ...errors import BrokerUnavailable
from ...lanes import Lane
from ...spec import QueueSpec
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

__all__ = ["AsyncDeclarations", "apply"]

log = logging.getLogger("workq.rabbitmq")


async def apply(ch: AbstractChannel, steps: Sequence[Step]) -> None:
    """Declare ``steps`` (see ``plan.py``) on an aio-pika channel, in order."""
    for step in steps:
        if isinstance(step, Exchange):
            await ch.declare_exchange(step.name, aio_pika.ExchangeType(step.kind), durable=True)
        elif isinstance(step, Queue):
            await ch.declare_queue(step.name, durable=True, arguments=step.arguments)
        else:
            queue = await ch.get_queue(step.queue, ensure=False)
            await queue.bind(step.exchange, step.routing_key, arguments=step.arguments)


class AsyncDeclarations(Rules):
    """Declaring and reading a queue's objects; mixed into the async driver."""

    settings: RabbitMQSettings
    _admin: AbstractChannel | None
    _declared: Declared
    _regs: dict[str, Registry]

    if TYPE_CHECKING:

        async def admin(self) -> AbstractChannel: ...
        async def channel(self, confirms: bool = False) -> AbstractChannel: ...
        async def pub(self) -> AbstractChannel: ...

    async def _declare(self, topo: Topology, coro: Any) -> Any:
        try:
            return await coro
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._admin = None
            raise config_error(topo.name, str(exc)) from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._admin = None
            raise BrokerUnavailable(
                f"queue {topo.name!r} is not available right now ({exc}); "
                "retry once the node or its replicas are back"
            ) from exc

    async def _ensure_base(self, topo: Topology) -> None:
        if self._declared.fresh(topo.exchange):
            return
        default = Lane(topo.name)
        await self._declare(topo, self._lane_queue(topo, default))

        async def run() -> None:
            await apply(await self.admin(), base_steps(topo))

        await self._declare(topo, run())
        self._declared.mark(topo.exchange)
        self._declared.mark(topo.lane_queue(default))

    async def _lane_queue(self, topo: Topology, lane: Lane) -> None:
        """Declare a lane queue, or adopt it as it is: see the sync driver's twin."""
        qname = topo.lane_queue(lane)
        try:
            await (await self.admin()).declare_queue(
                qname, durable=True, arguments=topo.lane_args()
            )
            self.lanes_made.add(qname)
            return
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._admin = None
            why = str(exc)
        try:
            await (await self.admin()).declare_queue(
                qname, durable=True, arguments={"x-dead-letter-exchange": DLX_PROBE}
            )
            reply = None  # unreachable in practice: no queue has the probe as its DLX
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._admin = None
            reply = str(exc)
        self._adopt(topo, qname, why, reply)

    async def _exists(self, queue: str) -> bool:
        """Whether ``queue`` exists, asked on a channel of its own (a no closes it)."""
        ch = await self.channel()
        try:
            await ch.declare_queue(queue, passive=True)
            return True
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):
                await ch.close()

    async def _ensure_lanes(self, topo: Topology, lanes: set[Lane], delays: set[int]) -> None:
        out: list[bytes] = []
        for phys in lanes_to_declare(topo, lanes, self._declared):

            async def run_lane(phys: Lane = phys) -> None:
                await self._lane_queue(topo, phys)
                await apply(await self.admin(), [lane_bind(topo, phys)])

            await self._declare(topo, run_lane())
            self._declared.mark(topo.lane_queue(phys))
            out.append(lane_record(phys))
        for ms in delays_to_declare(topo, delays, self._declared):
            qname = topo.delay_queue(ms)

            async def run_delay(ms: int = ms) -> None:
                await apply(await self.admin(), delay_steps(topo, ms))

            await self._declare(topo, run_delay())
            fresh = qname not in self._declared.names
            self._declared.mark(qname)
            if fresh:
                out.append(delay_record(ms))
        if out:
            try:
                await self._registry(topo, write=out)
            except BrokerUnavailable as exc:
                log.warning("queue %r: recording new lanes failed: %s", topo.name, exc)
                self._declared = Declared()

    async def _registry(self, topo: Topology, write: Sequence[bytes] = ()) -> Registry:
        """Read the queue's registry (and add ``write``): see the sync driver's twin."""
        reg = self._regs.get(topo.name)
        if reg is None:
            reg = self._regs[topo.name] = Registry(topo.name)
        await self._ensure_base(topo)
        ch = await self.channel()
        try:
            q = await ch.get_queue(topo.meta, ensure=False)
            last: AbstractIncomingMessage | None = None
            while True:
                m = await q.get(no_ack=False, fail=False)
                if m is None:
                    break
                last = m
                reg.add(m.body)
            if write:
                for body in write:
                    reg.add(body)
                pub = await self.pub()
                try:
                    await asyncio.wait_for(
                        pub.default_exchange.publish(
                            aio_pika.Message(
                                reg.dump(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                            ),
                            topo.meta,
                        ),
                        SYNC_TIMEOUT,
                    )
                except (TimeoutError, aio_pika.exceptions.DeliveryError) as exc:
                    raise BrokerUnavailable(
                        f"queue {topo.name!r}: writing its registry record failed ({exc!r})"
                    ) from exc
                if last is not None:
                    await last.ack(multiple=True)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()  # what was read and not replaced goes back
        return reg

    async def _stored_spec(self, name: str) -> QueueSpec | None:
        """The spec in an existing registry of ``name``: see the sync driver's twin."""
        ch = await self.channel()
        try:
            try:
                q = await ch.declare_queue(
                    meta_queue(self.settings.queue_prefix + name), passive=True
                )
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None  # never declared: the defaults apply
            reg = Registry(name)
            while (m := await q.get(no_ack=False, fail=False)) is not None:
                reg.add(m.body)
            return reg.spec
        finally:
            with contextlib.suppress(Exception):
                await ch.close()  # what was read goes back
