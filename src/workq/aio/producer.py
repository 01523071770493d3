"""The async producer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ..checks import Gate
from ..driver import AsyncDriver, Outgoing
from ..middleware import Chain
from ..producer import draft_many, draft_to, fit, fit_many
from ..spec import QueueSpec

__all__ = ["Producer"]


class Producer:
    """Publishes messages; each call returns once the broker has durably accepted them.

    After ``close()`` (or its broker's) every call raises ``workq.Closed``.

    Example:
        ```python
        async with broker.producer() as p:
            await p.publish("reports", {"day": "2026-11-21"}, tenant="acme")
        ```
    """

    def __init__(
        self,
        driver: AsyncDriver,
        spec_of: Callable[[str], Awaitable[QueueSpec]],
        *,
        parent: Gate | None = None,
        chain: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._spec_of = spec_of
        self._gate = Gate("producer", parent)
        self._chain = chain or None  # an empty chain costs nothing per publish

    async def _send(self, target: QueueSpec | tuple[str, str], batch: Sequence[Outgoing]) -> None:
        """Publish ``batch`` to a queue (its spec) or through ``(exchange, routing_key)``,
        wrapped in the middleware; a routed publish shows under the exchange's name."""
        chain = self._chain
        if chain is None:
            await self._publish(target, batch)
            return
        name = target.name if isinstance(target, QueueSpec) else target[0]
        ctx = chain.before_publish(name, batch)
        try:
            await self._publish(target, batch)
        except BaseException as exc:
            chain.after_publish(ctx, exc)
            raise
        chain.after_publish(ctx, None)

    async def _publish(
        self, target: QueueSpec | tuple[str, str], batch: Sequence[Outgoing]
    ) -> None:
        if isinstance(target, QueueSpec):
            await self._driver.publish(target, batch)
        else:
            await self._driver.publish_routed(target[0], target[1], batch)

    @property
    def closed(self) -> bool:
        """True once this producer or its broker is closed."""
        return not self._gate.is_open

    async def publish(
        self,
        queue: str | None,
        body: Any,
        *,
        tenant: str | None = None,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        message_id: str | None = None,
        key: str | bytes | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> str:
        """Publish one message and return its id (the twin of ``workq.Producer.publish``,
        ``exchange`` and ``routing_key`` included)."""
        self._gate.check("publish")
        msg, route = draft_to(
            self._driver.capabilities,
            queue,
            body,
            tenant=tenant,
            priority=priority,
            headers=headers,
            delay=delay,
            message_id=message_id,
            key=key,
            exchange=exchange,
            routing_key=routing_key,
        )
        if route is not None:
            await self._send(route, [msg])
            return msg.id
        spec = await self._spec_of(msg.lane.queue)
        await self._send(spec, [fit(spec, self._driver.capabilities, msg)])
        return msg.id

    async def publish_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Publish bodies or ``workq.Message`` objects together; return their ids in order."""
        self._gate.check("publish_many")
        batch = draft_many(queue, messages)
        spec = await self._spec_of(queue)
        if batch:
            await self._send(spec, fit_many(spec, self._driver.capabilities, batch))
        return [m.id for m in batch]

    async def close(self) -> None:
        """Nothing is buffered (every publish has returned confirmed): later calls raise
        ``workq.Closed``. Idempotent."""
        self._gate.close()

    async def __aenter__(self) -> Producer:
        self._gate.check("use")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
