"""Deliveries: one received message, settled exactly once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .checks import check_seconds
from .holding import SETTLED_AS
from .messages import Received
from .policy import Outcome
from .spec import QueueSpec

if TYPE_CHECKING:
    from .consumer import Consumer
    from .holding import Holding

__all__ = ["SETTLED_AS", "BaseDelivery", "Delivery", "check_reason"]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("workq")


def check_reason(reason: Any) -> str:
    """A dead-letter reason: a str."""
    if not isinstance(reason, str):
        raise TypeError(f"reason={reason!r} is a {type(reason).__name__}: it must be a str")
    return reason


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
    def _state(self) -> Holding:
        raise NotImplementedError

    @property
    def _spec(self) -> QueueSpec:
        return self._state.spec

    def _begin(self, how: str) -> None:
        """Settle once, on an open consumer (``AlreadySettled``, ``Closed`` otherwise)."""
        self._state.check_settle(self.id, self._settled, how)
        self._settled = how

    def _late(self, result: Outcome) -> bool:
        """True if a worker's settlement comes after the consumer closed: then it is
        dropped (the message went back to the queue on close), not raised."""
        if self._settled is None and self._state.closed:
            self._settled = SETTLED_AS[result.action]
            log.info(
                "delivery %s of queue %r: its handler finished after the consumer closed "
                "(after shutdown_timeout); the message was given back then, so %s is skipped",
                self.id,
                self.queue,
                result.action,
            )
            return True
        return False

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} queue={self.queue!r} tenant={self.tenant!r} "
            f"priority={self.priority} attempt={self.attempt}>"
        )


class Delivery(BaseDelivery):
    """A message received by a consumer: settle it with ``ack``, ``nack`` or ``reject``.

    Settling twice raises ``workq.AlreadySettled``; settling after the consumer closed
    raises ``workq.Closed`` (the message went back to the queue).

    >>> for d in consumer:          # doctest: +SKIP
    ...     process(d.json())
    ...     d.ack()
    """

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    @property
    def _state(self) -> Holding:
        return self._consumer._state

    def ack(self) -> None:
        """Done: remove the message for good."""
        self._consumer._settle(self, "ack")

    def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts.

        >>> d.nack(delay=5.0)   # doctest: +SKIP
        """
        self._consumer._settle(self, "nack", check_seconds("delay", delay, optional=True))

    def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``."""
        self._consumer._settle(self, "reject", reason=check_reason(reason))

    def _apply(self, result: Outcome) -> None:
        """Settle as a worker decided, keeping the handler's error as the reason.

        After the consumer closed (a handler that outlived ``shutdown_timeout``) this does
        nothing: the message is back in the queue already.
        """
        if not self._late(result):
            self._consumer._settle(self, result.action, result.delay, result.reason)
