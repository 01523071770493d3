"""Deliveries: one received message, settled exactly once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .checks import check_seconds
from .consumer_state import SETTLED_AS
from .driver import Received
from .policy import Decision
from .spec import QueueSpec

if TYPE_CHECKING:
    from .consumer import Consumer
    from .consumer_state import Holding

__all__ = ["SETTLED_AS", "BaseDelivery", "Delivery", "check_reason"]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("workq")


def check_reason(reason: Any) -> str:
    """A dead-letter reason: a str."""
    if not isinstance(reason, str):
        raise TypeError(f"reason={reason!r} is a {type(reason).__name__}: it must be a str")
    return reason


class BaseDelivery:
    """The data of a delivery, shared by ``workq.Delivery`` and ``workq.aio.Delivery``.

    Every attribute is read-only. The body is kept as the bytes the broker gave;
    ``text()``, ``json()`` and ``parse()`` decode it on demand.
    """

    __slots__ = ("_item", "_settled")

    def __init__(self, item: Received) -> None:
        self._item = item
        self._settled: str | None = None

    @property
    def id(self) -> str:
        """The message id: given to ``publish(message_id=...)`` or made by workq.

        The same on every delivery of one message, so handlers can deduplicate on it.
        """
        return self._item.id

    @property
    def queue(self) -> str:
        """The queue it was published to."""
        return self._item.lane.queue

    @property
    def tenant(self) -> str | None:
        """The tenant it was published for; ``None`` for the default lane."""
        return self._item.lane.tenant

    @property
    def priority(self) -> int:
        """Its priority, ``0..max_priority`` of the queue (higher is delivered first)."""
        return self._item.lane.priority

    @property
    def body(self) -> bytes:
        """The body as published, in bytes (str bodies as UTF-8, dicts and models as JSON)."""
        return self._item.body

    @property
    def headers(self) -> dict[str, str]:
        """The headers given to ``publish(headers=...)``, plus ``content-type``."""
        return self._item.headers

    @property
    def attempt(self) -> int:
        """How many times this message has been delivered, 1 the first time."""
        return self._item.attempt

    @property
    def redelivered(self) -> bool:
        """Whether this message was delivered before: ``attempt > 1``."""
        return self._item.redelivered

    @property
    def enqueued_at(self) -> datetime:
        """When it was first published, as an aware UTC datetime."""
        return datetime.fromtimestamp(self._item.enqueued_at, UTC)

    @property
    def settled(self) -> bool:
        """Whether it was acked, nacked or rejected already."""
        return self._settled is not None

    def text(self) -> str:
        """The body decoded as UTF-8.

        Raises:
            UnicodeDecodeError: The body is not UTF-8.
        """
        return self._item.body.decode()

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            json.JSONDecodeError: The body is not JSON (a ``ValueError``).

        Example:
            ```python
            job = d.json()          # {"day": "2026-11-21"}
            ```
        """
        return json.loads(self._item.body)

    def parse(self, model: type[M]) -> M:
        """The body validated as a pydantic model.

        Args:
            model: The pydantic model class to validate the JSON body as.

        Returns:
            An instance of ``model``.

        Raises:
            pydantic.ValidationError: The body is not valid JSON for ``model``.

        Example:
            ```python
            class Report(BaseModel):
                day: date

            report = d.parse(Report)
            ```
        """
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

    def _late(self, result: Decision) -> bool:
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
    raises ``workq.Closed`` (the message went back to the queue). One left unsettled
    comes back to the queue when its consumer closes (at once) or dies (after the lease
    or session). The data (``id``, ``tenant``, ``attempt``, ``headers``, ``json()``,
    ``parse()``...) is listed below.

    Example:
        ```python
        with broker.consumer("reports", prefetch=10) as consumer:
            for d in consumer:
                try:
                    process(d.json())
                except TemporaryError:
                    d.nack(delay=5.0)
                except ValueError as exc:
                    d.reject(reason=str(exc))
                else:
                    d.ack()
        ```
    """

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    @property
    def _state(self) -> Holding:
        return self._consumer._state

    def ack(self) -> None:
        """Done: remove the message for good.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
        """
        self._consumer._settle(self, "ack")

    def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts.

        The next delivery has ``attempt + 1``. Once ``attempt`` has reached the queue's
        ``max_attempts``, the message goes to the dead-letter queue instead.

        Args:
            delay: Seconds before it may be delivered again; ``None`` for now.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
            TypeError: ``delay`` is not a number.
            ValueError: ``delay`` is negative or not finite.

        Example:
            ```python
            d.nack(delay=5.0)
            ```
        """
        self._consumer._settle(self, "nack", check_seconds("delay", delay, optional=True))

    def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``.

        Args:
            reason: Why, kept with the dead letter.

        Raises:
            AlreadySettled: It was settled before.
            Closed: Its consumer closed; the message went back to the queue then.
            TypeError: ``reason`` is not a str.
        """
        self._consumer._settle(self, "reject", reason=check_reason(reason))

    def _apply(self, result: Decision) -> None:
        """Settle as a worker decided, keeping the handler's error as the reason.

        After the consumer closed (a handler that outlived ``shutdown_timeout``) this does
        nothing: the message is back in the queue already.
        """
        if not self._late(result):
            self._consumer._settle(self, result.action, result.delay, result.reason)
