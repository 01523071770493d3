"""The native asyncio RabbitMQ driver on aio-pika: same topology as the pika driver.

Publishes of a batch are sent together and their confirms awaited together
(``asyncio.gather``), so ``publish_many`` costs about one round trip, not one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ...driver import (
    AsyncDriver,
    AsyncReceiver,
    DeadLetter,
    LaneStats,
    Outgoing,
    QueueStats,
    Received,
)
from ...errors import BrokerUnavailable, ConfigurationError, PublishError
from ...lanes import Lane
from ...retrying import PUBLISH
from ...spec import QueueSpec
from .aio_connection import AsyncConnection, bounded
from .aio_consume import Consuming
from .aio_declare import AsyncDeclarations
from .codec import (
    ATTEMPT,
    Envelope,
    copy_of,
    envelope,
    reason_of,
    received,
    routed_envelope,
    routed_failure,
)
from .connection import (
    CAPABILITIES,
    CLOSE_TIMEOUT,
    SYNC_TIMEOUT,
    Deadline,
    lanes_bound,
    not_confirmed,
)
from .management import list_queues
from .settings import RabbitMQSettings
from .topology import (
    Declared,
    Registry,
    Topology,
    check_declared,
    delay_ms,
    queue_type,
    spec_record,
)

__all__ = ["AsyncRabbitMQDriver", "properties", "send"]

log = logging.getLogger("workq.rabbitmq")


class _Retry(Exception):
    pass


def properties(e: Envelope) -> Any:
    """The AMQP properties of ``e``, as ``aio_pika.Message`` would set them."""
    return aiormq.spec.Basic.Properties(
        headers=e.headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=e.message_id,
        timestamp=None if e.timestamp is None else datetime.fromtimestamp(e.timestamp, tz=UTC),
        priority=e.priority,
        content_type=e.content_type,
    )


async def send(ch: Any, e: Envelope) -> Any:
    """Publish ``e`` on an aiormq channel and await its confirm.

    Straight to aio-pika's own aiormq channel, as ``Exchange.publish`` does, but without
    waiting for each socket write before sending the next message (the confirm is still
    awaited) and without building an ``aio_pika.Message``.
    """
    return await ch.basic_publish(
        e.body,
        exchange=e.exchange,
        routing_key=e.routing_key,
        properties=properties(e),
        mandatory=e.mandatory,
        wait=False,
    )


async def _confirmed(sends: list[Coroutine[Any, Any, Any]], timeout: float) -> list[Any]:
    """Await ``sends`` together within ``timeout`` (``TimeoutError`` past it): each one's
    result or error, as ``gather(return_exceptions=True)`` gives them.

    One is awaited in this task: a task of its own and a gather around it cost the
    event loop three more passes for a single publish.
    """
    if len(sends) != 1:
        return await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), timeout)
    async with asyncio.timeout(timeout):
        try:
            return [await sends[0]]
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this task is cancelled (or timed out): not the publish's error
            return [exc]
        except Exception as exc:
            return [exc]


class AsyncRabbitMQDriver(AsyncConnection, AsyncDeclarations, AsyncDriver):
    """The asyncio RabbitMQ driver (aio-pika)."""

    capabilities = CAPABILITIES

    def __init__(self, settings: RabbitMQSettings) -> None:
        super().__init__(settings)
        self._regs: dict[str, Registry] = {}
        self._topos: dict[str, Topology] = {}
        #: Lane queues adopted as they are, and their own dead-letter exchange.
        self.adopted: dict[str, str | None] = {}
        self.lanes_made: set[str] = set()
        self._closed = False
        #: The sync driver its consumers receive through, made by the first one.
        self.consuming: Consuming | None = None

    @classmethod
    async def connect(cls, settings: RabbitMQSettings) -> AsyncRabbitMQDriver:
        driver = cls(settings)
        await driver.connection()
        return driver

    def topology(self, spec: QueueSpec) -> Topology:
        topo = self._topos.get(spec.name)
        if topo is None or topo.max_priority != spec.max_priority:
            topo = self._topos[spec.name] = Topology.of(
                spec, self.settings.queue_type, self.settings.queue_prefix
            )
        return topo

    # -- AsyncDriver API ---------------------------------------------------------------

    @bounded
    async def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        """See the sync twin."""
        if not await self._exists(self.settings.queue_prefix + spec.name):
            return None
        return await self._stored_spec(spec.name) or spec

    async def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        """See the sync twin."""
        # Bounded as a whole, like the sync driver's: a stuck broker is an error, not a hang.
        try:
            async with asyncio.timeout(SYNC_TIMEOUT * 3):
                effective = await self._declare_spec(spec, implicit)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"declaring queue {spec.name!r} on RabbitMQ at {self.settings.redacted_url()} "
                f"took over {SYNC_TIMEOUT * 3}s; check that the broker and its queues' nodes "
                "are healthy"
            ) from exc
        self._topos[spec.name] = Topology.of(
            effective, self.settings.queue_type, self.settings.queue_prefix
        )
        return effective

    async def _declare_spec(self, spec: QueueSpec, implicit: bool) -> QueueSpec:
        if implicit and (stored := await self._stored_spec(spec.name)) is not None:
            # Adopt what was declared elsewhere, declaring it the same way.
            await self._ensure_base(
                Topology.of(stored, self.settings.queue_type, self.settings.queue_prefix)
            )
            return stored
        kind = queue_type(spec, self.settings.queue_type)
        topo = Topology.of(spec, self.settings.queue_type, self.settings.queue_prefix)
        reg = await self._registry(topo)
        if reg.spec is None or (not implicit and reg.explicit is None):
            reg = await self._registry(topo, write=[spec_record(spec, kind, implicit)])
        if implicit:
            return reg.spec or spec
        if reg.explicit is not None:  # None only while the registry is unavailable
            check_declared(reg.explicit, spec, kind)
        return spec

    async def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        await self.publish_to(self.topology(spec), messages)

    async def publish_to(
        self, topo: Topology, messages: Sequence[Outgoing], dead: str | None = None
    ) -> None:
        """Publish and await every confirm, retrying what is not confirmed (bounded)."""
        if not messages:
            return
        left = list(messages)
        errors: list[BaseException] = []

        async def one(ch: Any, msg: Outgoing) -> Any:
            return await send(ch, envelope(topo, msg, dead))

        async def attempt() -> None:
            nonlocal left, errors
            try:
                await self._ensure_base(topo)
                lanes = {m.lane for m in left}
                delays = {delay_ms(m.delay) for m in left if m.delay and dead is None}
                await self._ensure_lanes(topo, lanes, delays)
                ch = await (await self.pub()).get_underlay_channel()
            except ConfigurationError:
                raise
            except Exception as exc:
                errors = [exc]
                await self.reset()
                raise _Retry() from exc
            results = await _confirmed([one(ch, m) for m in left], deadline.left())
            failed = [
                (m, r) for m, r in zip(left, results, strict=True) if isinstance(r, BaseException)
            ]
            if failed:
                if any(isinstance(r, aio_pika.exceptions.DeliveryError) for _, r in failed):
                    self._declared = Declared()  # unroutable: a lane queue is missing, re-declare
                    await self.reset_pub()  # a nack can mean a session stuck on a lost leader
                else:
                    await self.reset()  # the connection or channel failed under us
                left = [m for m, _ in failed]
                errors = [r for _, r in failed]
                raise _Retry()

        # New lanes first, on a bound of their own: see the sync twin.
        new = len({topo.lane_queue(m.lane) for m in messages} - self.lanes_made)
        try:
            if new:
                async with asyncio.timeout(lanes_bound(new)):
                    await self._ensure_base(topo)
                    await self._ensure_lanes(
                        topo,
                        {m.lane for m in messages},
                        {delay_ms(m.delay) for m in messages if m.delay and dead is None},
                    )
        except ConfigurationError:
            raise
        except Exception as exc:
            log.info("queue %r: declaring lanes before publishing failed: %r", topo.name, exc)
        # One bound for the rest of the call, retries (and any reconnect) included.
        deadline = Deadline(self.settings.publish_timeout)
        try:
            await self._attempts(attempt, deadline)
        except (TimeoutError, _Retry) as exc:
            if isinstance(exc, TimeoutError):
                # Silence, not a refusal: the connection may be dead without knowing it.
                self.drop()
            sample = repr(errors[0]) if errors else "no confirm within publish_timeout"
            raise PublishError(
                not_confirmed(
                    self.settings, f"queue {topo.name!r}", len(left), len(messages), sample
                )
            ) from exc

    async def _attempts(
        self, attempt: Callable[[], Coroutine[Any, Any, None]], deadline: Deadline
    ) -> None:
        """Run ``attempt`` until it does not raise ``_Retry``: ``publish_retries``
        times more at most, within ``publish_timeout`` in all (the sync twin's bounds),
        backing off in between."""
        async with asyncio.timeout(self.settings.publish_timeout):
            try:
                await attempt()  # the first try outside tenacity: most need no other
                return
            except (TimeoutError, _Retry) as exc:
                first: BaseException | None = exc
            async for retry in PUBLISH.async_retrying(
                (_Retry, asyncio.TimeoutError),
                attempts=self.settings.publish_retries + 1,
                deadline=deadline,
            ):
                with retry:
                    if first is not None:
                        # Counted as tenacity's first try: bounds and backoff as before.
                        failure, first = first, None
                        raise failure
                    await attempt()

    async def publish_routed(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> None:
        """See the sync twin: the same envelopes and the same decision on failures."""
        entries = [routed_envelope(exchange, routing_key, m) for m in messages]
        deadline = Deadline(self.settings.publish_timeout)
        last = "no confirm within publish_timeout"

        async def attempt() -> None:
            nonlocal entries, last
            try:
                ch = await (await self.pub()).get_underlay_channel()
            except Exception as exc:
                last = repr(exc)
                await self.reset()
                raise _Retry() from exc
            results = await _confirmed([send(ch, e) for e in entries], deadline.left())
            failed = [
                (e, r)
                for e, r in zip(entries, results, strict=True)
                if isinstance(r, BaseException)
            ]
            for _, r in failed:
                returned = isinstance(r, aio_pika.exceptions.DeliveryError)
                if why := routed_failure(exchange, routing_key, returned, repr(r)):
                    await self.reset_pub()
                    raise PublishError(why)
            if failed:
                last = repr(failed[0][1])
                await self.reset_pub()
                entries = [e for e, _ in failed]
                raise _Retry()

        try:
            await self._attempts(attempt, deadline)
        except (TimeoutError, _Retry) as exc:
            if isinstance(exc, TimeoutError):
                self.drop()  # silence, not a refusal: see publish_to
            target = f"exchange {exchange!r} (routing key {routing_key!r})"
            raise PublishError(
                not_confirmed(self.settings, target, len(entries), len(messages), last)
            ) from exc

    @bounded
    async def lanes(self, spec: QueueSpec) -> list[Lane]:
        topo = self.topology(spec)
        return topo.known_lanes(await self._registry(topo))

    async def open(self, spec: QueueSpec, prefetch: int) -> AsyncReceiver:
        """The sync (pika) receiver on threads: see :mod:`.aio_consume`."""
        from .aio_consume import open_threaded

        return await open_threaded(self, spec, prefetch)

    @bounded
    async def stats(self, spec: QueueSpec) -> QueueStats:
        topo = self.topology(spec)
        registry = await self._registry(topo)
        ch = await self.channel()
        try:
            out = []
            for lane in topo.known_lanes(registry):
                q = await ch.declare_queue(topo.lane_queue(lane), passive=True)
                out.append(LaneStats(lane, q.declaration_result.message_count or 0, 0))
            delayed = 0
            for ms in registry.delays:
                with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
                    q = await ch.declare_queue(topo.delay_queue(ms), passive=True)
                    delayed += q.declaration_result.message_count or 0
                if ch.is_closed:
                    ch = await self.channel()
            if delayed and out:
                out[0] = LaneStats(out[0].lane, out[0].ready, 0, delayed)
            dlq = await ch.declare_queue(topo.dlq, passive=True)
            dead = dlq.declaration_result.message_count or 0
        finally:
            with contextlib.suppress(Exception):
                await ch.close()
        return QueueStats(queue=topo.name, lanes=out, dead_letters=dead)

    async def _read_dlq(
        self, topo: Topology, limit: int
    ) -> tuple[AbstractChannel, list[AbstractIncomingMessage]]:
        await self._ensure_base(topo)
        ch = await self.channel()
        q = await ch.get_queue(topo.dlq, ensure=False)
        got: list[AbstractIncomingMessage] = []
        while len(got) < limit:
            m = await q.get(no_ack=False, fail=False)
            if m is None:
                break
            got.append(m)
        return ch, got

    @bounded
    async def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        topo = self.topology(spec)
        if limit <= 0:
            return []
        ch, got = await self._read_dlq(topo, limit)
        try:
            out = []
            for m in got:
                item = self._received(topo, m, None)
                out.append(
                    DeadLetter(
                        id=item.id,
                        queue=topo.name,
                        tenant=item.lane.tenant,
                        priority=item.lane.priority,
                        body=m.body,
                        headers=item.headers,
                        reason=reason_of(m.headers),
                        attempt=int(str((m.headers or {}).get(ATTEMPT, 1))),
                        enqueued_at=item.enqueued_at,
                    )
                )
            return out
        finally:
            await ch.close()  # closing requeues what was read: reading removes nothing

    @staticmethod
    def _received(
        topo: Topology, m: AbstractIncomingMessage, token: Any, queue: str | None = None
    ) -> Received:
        return received(
            topo,
            body=m.body,
            headers=m.headers,
            message_id=m.message_id,
            priority=m.priority,
            redelivered=bool(m.redelivered),
            timestamp=int(m.timestamp.timestamp()) if m.timestamp else None,
            token=token,
            content_type=m.content_type,
            queue=queue,
        )

    async def redrive(self, spec: QueueSpec) -> int:
        topo = self.topology(spec)
        moved = 0
        while True:
            ch, got = await self._read_dlq(topo, 100)
            try:
                if not got:
                    return moved
                await self.publish_to(
                    topo, [copy_of(self._received(topo, m, None), attempt=1) for m in got]
                )
                await got[-1].ack(multiple=True)
                moved += len(got)
            finally:
                await ch.close()

    async def queues(self) -> list[str]:
        """From the management HTTP API (AMQP cannot list queues); see management.py."""
        return await asyncio.to_thread(list_queues, self.settings)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.consuming is not None:
            await self.consuming.close()
        if self.conn is not None:
            # Bounded: on a black-holed network the broker never answers the close.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), CLOSE_TIMEOUT)
