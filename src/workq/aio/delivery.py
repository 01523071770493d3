"""The async delivery: ``await d.ack()``, ``nack()`` or ``reject()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..checks import check_seconds
from ..delivery import BaseDelivery, check_reason
from ..driver import Received
from ..policy import Decision

if TYPE_CHECKING:
    from ..consumer_state import Holding
    from .consumer import Consumer

__all__ = ["Delivery"]


class Delivery(BaseDelivery):
    """A received message; settle it with ``await d.ack()``, ``nack()`` or ``reject()``.

    Settling twice raises ``workq.AlreadySettled``; settling after the consumer closed
    raises ``workq.Closed`` (the message went back to the queue). The data (``id``,
    ``tenant``, ``attempt``, ``headers``, ``json()``, ``parse()``...) is that of
    ``workq.Delivery``, listed below.

    Example:
        ```python
        async with broker.consumer("reports", prefetch=10) as consumer:
            async for d in consumer:
                try:
                    await process(d.json())
                except TemporaryError:
                    await d.nack(delay=5.0)
                else:
                    await d.ack()
        ```
    """

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    @property
    def _state(self) -> Holding:
        return self._consumer._state

    async def ack(self) -> None:
        """Done: remove the message for good.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
        """
        await self._consumer._settle(self, "ack")

    async def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts.

        Args:
            delay: Seconds before it may be delivered again; ``None`` for now.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
            TypeError: ``delay`` is not a number.
            ValueError: ``delay`` is negative or not finite.
        """
        await self._consumer._settle(self, "nack", check_seconds("delay", delay, optional=True))

    async def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``.

        Args:
            reason: Why, kept with the dead letter.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
            TypeError: ``reason`` is not a str.
        """
        await self._consumer._settle(self, "reject", reason=check_reason(reason))

    async def _apply(self, result: Decision) -> None:
        """Settle as a worker decided; after the consumer closed, do nothing."""
        if not self._late(result):
            await self._consumer._settle(self, result.action, result.delay, result.reason)
