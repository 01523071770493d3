"""The async producer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ..driver import AsyncDriver
from ..messages import Outgoing
from ..middleware import Chain
from ..producer import prepare, prepare_many
from ..spec import QueueSpec

__all__ = ["Producer"]


class Producer:
    """Publishes messages; each call returns once the broker has durably accepted them.

    >>> async with broker.producer() as p:                 # doctest: +SKIP
    ...     await p.publish("reports", {"day": "2026-11-21"}, tenant="acme")
    """

    def __init__(
        self,
        driver: AsyncDriver,
        spec_of: Callable[[str], Awaitable[QueueSpec]],
        chain: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._spec_of = spec_of
        self._chain = chain or None

    async def _send(self, spec: QueueSpec, batch: Sequence[Outgoing]) -> None:
        chain = self._chain
        if chain is None:
            await self._driver.publish(spec, batch)
            return
        ctx = chain.before_publish(spec.name, batch)
        try:
            await self._driver.publish(spec, batch)
        except BaseException as exc:
            chain.after_publish(ctx, exc)
            raise
        chain.after_publish(ctx, None)

    async def publish(
        self,
        queue: str,
        body: Any,
        *,
        tenant: str | None = None,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message and return its id."""
        spec = await self._spec_of(queue)
        msg = prepare(
            spec,
            self._driver.capabilities,
            body,
            tenant=tenant,
            priority=priority,
            headers=headers,
            delay=delay,
            message_id=message_id,
        )
        await self._send(spec, [msg])
        return msg.id

    async def publish_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Publish bodies or ``workq.Message`` objects together; return their ids in order."""
        spec = await self._spec_of(queue)
        batch = prepare_many(spec, self._driver.capabilities, messages)
        if batch:
            await self._send(spec, batch)
        return [m.id for m in batch]

    async def close(self) -> None:
        """Nothing is buffered: every publish has returned confirmed."""

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
