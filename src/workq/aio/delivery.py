"""The async delivery: ``await d.ack()``, ``nack()`` or ``reject()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..checks import check_seconds
from ..delivery import BaseDelivery, check_reason
from ..messages import Received
from ..policy import Outcome

if TYPE_CHECKING:
    from ..holding import Holding
    from .consumer import Consumer

__all__ = ["Delivery"]


class Delivery(BaseDelivery):
    """A received message; settle it with ``await d.ack()``, ``nack()`` or ``reject()``.

    Settling twice raises ``workq.AlreadySettled``; settling after the consumer closed
    raises ``workq.Closed`` (the message went back to the queue).

    >>> async for d in consumer:   # doctest: +SKIP
    ...     await d.ack()
    """

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    @property
    def _state(self) -> Holding:
        return self._consumer._state

    async def ack(self) -> None:
        """Done: remove the message for good."""
        await self._consumer._settle(self, "ack")

    async def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts."""
        await self._consumer._settle(self, "nack", check_seconds("delay", delay, optional=True))

    async def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``."""
        await self._consumer._settle(self, "reject", reason=check_reason(reason))

    async def _apply(self, result: Outcome) -> None:
        """Settle as a worker decided; after the consumer closed, do nothing."""
        if not self._late(result):
            await self._consumer._settle(self, result.action, result.delay, result.reason)
