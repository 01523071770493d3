"""Deliveries: one received message, settled exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .errors import AlreadySettled
from .messages import Received
from .policy import Decision
from .spec import QueueSpec

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["BaseDelivery", "Delivery"]

M = TypeVar("M", bound=BaseModel)

SETTLED_AS = {"ack": "acked", "nack": "nacked", "reject": "rejected"}


class BaseDelivery:
    """The data of a delivery, shared by ``workq.Delivery`` and ``workq.aio.Delivery``."""

    __slots__ = ("_item", "_settled")

    def __init__(self, item: Received) -> None:
        self._item = item
        self._settled: str | None = None

    @property
    def id(self) -> str:
        return self._item.id

    @property
    def queue(self) -> str:
        return self._item.lane.queue

    @property
    def tenant(self) -> str | None:
        return self._item.lane.tenant

    @property
    def priority(self) -> int:
        return self._item.lane.priority

    @property
    def body(self) -> bytes:
        return self._item.body

    @property
    def headers(self) -> dict[str, str]:
        return self._item.headers

    @property
    def attempt(self) -> int:
        """How many times this message has been delivered, 1 the first time."""
        return self._item.attempt

    @property
    def redelivered(self) -> bool:
        return self._item.redelivered

    @property
    def enqueued_at(self) -> datetime:
        return datetime.fromtimestamp(self._item.enqueued_at, UTC)

    @property
    def settled(self) -> bool:
        return self._settled is not None

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self._item.body.decode()

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self._item.body)

    def parse(self, model: type[M]) -> M:
        """The body validated as a pydantic model; ``pydantic.ValidationError`` if it is not."""
        return model.model_validate_json(self._item.body)

    @property
    def _spec(self) -> QueueSpec:
        raise NotImplementedError

    def _mark(self, how: str) -> None:
        if self._settled is not None:
            raise AlreadySettled(
                f"delivery {self.id} of queue {self.queue!r} was already {self._settled}; "
                f"it cannot be {how} too: settle each delivery once"
            )
        self._settled = how

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} queue={self.queue!r} tenant={self.tenant!r} "
            f"priority={self.priority} attempt={self.attempt}>"
        )


class Delivery(BaseDelivery):
    """A message received by a consumer: settle it with ``ack``, ``nack`` or ``reject``.

    >>> for d in consumer:          # doctest: +SKIP
    ...     process(d.json())
    ...     d.ack()
    """

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    def ack(self) -> None:
        """Done: remove the message for good."""
        self._mark("acked")
        self._consumer._settle(self._item, "ack")

    def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts."""
        self._mark("nacked")
        self._consumer._settle(self._item, "nack", delay=delay)

    def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``."""
        self._mark("rejected")
        self._consumer._settle(self._item, "reject", reason=reason)

    @property
    def _spec(self) -> QueueSpec:
        return self._consumer._state.spec

    def _apply(self, result: Decision) -> None:
        """Settle as a worker decided, keeping the handler's error as the reason."""
        self._mark(SETTLED_AS[result.action])
        self._consumer._settle(self._item, result.action, result.delay, result.reason)
