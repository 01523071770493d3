"""``workq.Message``: a body with per-message options, for ``publish_many``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Message"]


@dataclass(slots=True)
class Message:
    """A body with per-message options, for ``publish_many``.

    The fields are the keyword arguments of ``publish()``; ``publish_many`` takes
    ``Message`` objects and plain bodies mixed.

    Attributes:
        body: ``bytes``, ``str``, a JSON-able ``dict`` or ``list``, or a pydantic model
            (stored as JSON with a ``content-type`` header). Any other type is a
            ``TypeError`` when published.
        tenant: The tenant's lane (``[A-Za-z0-9_-]{1,64}``); ``None`` for the default lane.
        priority: ``0..max_priority`` of the queue; higher is delivered first.
        headers: String headers delivered with the message.
        delay: Seconds before it may be delivered; ``None`` for at once.
        message_id: The id to use; ``None`` to have one made.
        key: A partitioning and ordering hint (``str`` or ``bytes``): the Kafka record
            key (by default the tenant); other backends ignore it.

    Examples:
        >>> Message({"id": 7}, tenant="acme", priority=9)  # doctest: +ELLIPSIS
        Message(body={'id': 7}, tenant='acme', priority=9, ...)

        Publishing a batch with per-message options:

        ```python
        with broker.producer() as p:
            ids = p.publish_many("reports", [
                {"day": "2026-11-20"},
                workq.Message({"day": "2026-11-21"}, tenant="acme", priority=9),
            ])
        ```
    """

    body: Any
    tenant: str | None = None
    priority: int = 0
    headers: Mapping[str, str] | None = None
    delay: float | None = None
    message_id: str | None = None
    key: str | bytes | None = None
