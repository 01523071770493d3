"""Messages going out and deliveries coming in, and the body codec.

Drivers see only :class:`Outgoing` and :class:`Received`: bytes, string headers and the
lane. Everything about body types lives here, once, for every backend.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .checks import META_PREFIX, check_headers, check_message_id, check_seconds
from .lanes import Lane

__all__ = [
    "CONTENT_TYPE",
    "META_PREFIX",
    "Message",
    "Outgoing",
    "Received",
    "check_headers",
    "encode_body",
    "new_id",
    "new_ids",
]

CONTENT_TYPE = "content-type"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BYTES = "application/octet-stream"


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


@dataclass(slots=True)
class Outgoing:
    """A message ready for a driver: encoded body, headers, lane and metadata."""

    lane: Lane
    id: str
    body: bytes
    headers: dict[str, str]
    delay: float | None = None
    attempt: int = 1
    enqueued_at: float = field(default_factory=time.time)
    #: The partitioning hint given with ``key=`` (Kafka's record key), or None.
    key: bytes | None = None


@dataclass(slots=True)
class Received:
    """What a driver hands back for one delivery.

    ``token`` is the driver's own handle (delivery tag, receipt handle, offset...).
    ``attempt`` counts deliveries, 1 on the first.
    """

    lane: Lane
    id: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    enqueued_at: float
    token: Any = None

    @property
    def redelivered(self) -> bool:
        return self.attempt > 1


def encode_body(body: Any) -> tuple[bytes, str]:
    """Encode a body as bytes and name its content type.

    Raises:
        TypeError: The body is of no accepted type, or a dict or list that is not JSON-able.

    Examples:
        >>> encode_body({"a": 1})
        (b'{"a":1}', 'application/json')
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), BYTES
    if isinstance(body, str):
        return body.encode(), TEXT
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode(), JSON
    if isinstance(body, dict | list):
        try:
            return json.dumps(body, separators=(",", ":")).encode(), JSON
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"message body is a {type(body).__name__} that is not JSON-able: {exc}"
            ) from exc
    raise TypeError(
        f"cannot publish a body of type {type(body).__name__}: use bytes, str, "
        "a JSON-able dict or list, or a pydantic model"
    )


def new_id() -> str:
    """A fresh random message id: 128 random bits as 32 hex digits (as ``uuid4().hex``)."""
    return os.urandom(16).hex()


def new_ids(count: int) -> list[str]:
    """``count`` fresh ids as :func:`new_id` makes them, from one call to the OS."""
    raw = os.urandom(16 * count).hex()
    return [raw[i : i + 32] for i in range(0, 32 * count, 32)]


def meta_headers(msg: Outgoing) -> dict[str, str]:
    """The message's headers plus workq's metadata, for brokers that carry it in headers."""
    meta = dict(msg.headers)
    meta[META_PREFIX + "id"] = msg.id
    meta[META_PREFIX + "attempt"] = str(msg.attempt)
    meta[META_PREFIX + "enqueued-at"] = repr(msg.enqueued_at)
    if msg.lane.tenant is not None:
        meta[META_PREFIX + "tenant"] = msg.lane.tenant
    meta[META_PREFIX + "priority"] = str(msg.lane.priority)
    return meta


def split_meta(headers: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split headers into (user headers, workq metadata without the prefix)."""
    user: dict[str, str] = {}
    meta: dict[str, str] = {}
    for key, value in headers.items():
        if key.startswith(META_PREFIX):
            meta[key[len(META_PREFIX) :]] = value
        else:
            user[key] = value
    return user, meta


def build_outgoing(
    spec_name: str,
    body: Any,
    *,
    tenant: str | None,
    priority: int,
    headers: Mapping[str, str] | None,
    delay: float | None,
    message_id: str | None,
) -> Outgoing:
    """Encode one message for a driver. Validation of lanes is the caller's."""
    all_headers = check_headers(headers)
    delay = check_seconds("delay", delay, optional=True)
    message_id = check_message_id(message_id)
    data, content_type = encode_body(body)
    all_headers.setdefault(CONTENT_TYPE, content_type)
    return Outgoing(
        lane=Lane(spec_name, tenant, priority),
        id=message_id or new_id(),
        body=data,
        headers=all_headers,
        delay=delay or None,
    )
