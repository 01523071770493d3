"""How workq messages map onto AMQP messages, and back; shared by both drivers.

No client library is imported here: each driver turns an :class:`Envelope` into its own
client's frames or properties, and a delivery's properties into :func:`received`.
:func:`envelope` is the one place that decides where a message is published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...codec import CONTENT_TYPE
from ...driver import Outgoing, Received
from ...headers import META_PREFIX, split_meta
from ...lanes import Lane
from .topology import DELAY, Topology, delay_ms

__all__ = [
    "ATTEMPT",
    "REASON",
    "Envelope",
    "content_id",
    "copy_of",
    "envelope",
    "header_text",
    "outgoing_headers",
    "reason_of",
    "received",
    "routed_envelope",
    "routed_failure",
]

REASON = META_PREFIX + "reason"
ATTEMPT = META_PREFIX + "attempt"

#: Headers the broker adds; they are not the user's.
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-stream-offset",
        DELAY,
    }
)

_ENQUEUED_AT = META_PREFIX + "enqueued-at"
_TENANT = META_PREFIX + "tenant"
_PRIORITY = META_PREFIX + "priority"


def outgoing_headers(msg: Outgoing, delay_bucket: int | None = None) -> dict[str, str]:
    """The user's headers plus workq's metadata, leaving out what :func:`received`
    would read back anyway: the id (it is the ``message_id`` property), attempt 1 and
    priority 0. Fewer headers are cheaper to encode, send and parse."""
    headers = dict(msg.headers)
    headers[_ENQUEUED_AT] = repr(msg.enqueued_at)
    lane = msg.lane
    if lane.tenant is not None:
        headers[_TENANT] = lane.tenant
    if lane.priority:
        headers[_PRIORITY] = str(lane.priority)
    if msg.attempt != 1:
        headers[ATTEMPT] = str(msg.attempt)
    if delay_bucket is not None:
        headers[DELAY] = str(delay_bucket)
    return headers


def header_text(value: Any) -> str:
    """An AMQP header value as a string: the rule for headers set by other clients.

    str as it is; bytes as UTF-8 text, or ``base64:`` and their base64 if they are not
    UTF-8; booleans ``true``/``false``; numbers (int, float, Decimal) as Python writes
    them; a timestamp as ISO 8601; ``None`` (void) as ``""``; arrays and tables as JSON
    whose leaves follow this same rule.

    >>> header_text(True), header_text(7), header_text(b"ok"), header_text([1, b"x"])
    ('true', '7', 'ok', '["1", "x"]')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return json.dumps(_leaves(value), separators=(", ", ": "))
    return str(value)


def _leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _leaves(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_leaves(v) for v in value]
    return header_text(value)


def content_id(body: bytes, headers: Mapping[str, Any], timestamp: int | None) -> str:
    """The id of a message another client sent without ``message_id``: a digest of its
    body, headers and timestamp, so a redelivery has the same id (and so do two
    messages identical in all three)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(body)
    h.update(json.dumps(_leaves(dict(headers)), sort_keys=True).encode())
    h.update(str(timestamp).encode())
    return "amqp-" + h.hexdigest()


def received(
    topo: Topology,
    *,
    body: bytes,
    headers: Mapping[str, Any] | None,
    message_id: str | None,
    priority: int | None,
    redelivered: bool,
    timestamp: int | None,
    token: Any,
    content_type: str | None = None,
    queue: str | None = None,
) -> Received:
    """A :class:`Received` from an AMQP delivery's properties; ``queue`` is the lane
    queue it came from, which names its tenant when the message's headers do not."""
    raw = dict(headers or {})
    delivery_count = raw.get("x-delivery-count")
    strings = {k: header_text(v) for k, v in raw.items() if k not in BROKER_HEADERS}
    user, meta = split_meta(strings)
    meta.pop("reason", None)
    if content_type and CONTENT_TYPE not in user:
        user[CONTENT_TYPE] = content_type
    if "tenant" in meta:
        tenant: str | None = meta["tenant"]
    else:
        from_queue = topo.lane_of_queue(queue) if queue else None
        tenant = from_queue.tenant if from_queue else None
    prio = min(int(meta.get("priority", priority or 0)), topo.max_priority)
    stored_attempt = int(meta.get("attempt", "1"))
    if isinstance(delivery_count, int) and not isinstance(delivery_count, bool):
        extra = delivery_count  # quorum queues count deliveries
    else:
        # Classic queues only say "delivered before": at least one more attempt.
        extra = 1 if redelivered else 0
    enqueued = meta.get("enqueued-at")
    return Received(
        lane=Lane(topo.name, tenant, prio),
        id=meta.get("id") or message_id or content_id(body, raw, timestamp),
        body=body,
        headers=user,
        attempt=stored_attempt + extra,
        enqueued_at=float(enqueued) if enqueued else float(timestamp or time.time()),
        token=token,
    )


def copy_of(item: Received, attempt: int, delay: float | None = None) -> Outgoing:
    """An :class:`Outgoing` re-publishing a received message with ``attempt``."""
    return Outgoing(
        lane=item.lane,
        id=item.id,
        body=item.body,
        headers=dict(item.headers),
        delay=delay or None,
        attempt=attempt,
        enqueued_at=item.enqueued_at,
    )


def reason_of(headers: Mapping[str, Any] | None) -> str:
    value = (headers or {}).get(REASON, "")
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Envelope:
    """One persistent AMQP message as workq sends it: where to, and its properties."""

    exchange: str
    routing_key: str
    body: bytes
    mandatory: bool = True
    headers: dict[str, Any] | None = None
    message_id: str | None = None
    timestamp: int | None = None
    priority: int | None = None
    content_type: str | None = None


def envelope(topo: Topology, msg: Outgoing, dead: str | None = None) -> Envelope:
    """Where and how ``msg`` is published: the one routing rule of both drivers.

    Every message keeps its lane's routing key, dead letters included (as RabbitMQ keeps
    the original key when it dead-letters), so a dead-letter exchange of another kind
    than workq's fanout can still route by tenant. Every message is ``mandatory``: one
    that no queue takes comes back as an error and is retried after re-declaring, never
    dropped, a dead letter included.
    """
    if dead is not None:
        headers = outgoing_headers(msg)
        headers[REASON] = dead
        exchange = topo.dlx
    elif msg.delay:
        headers = outgoing_headers(msg, delay_ms(msg.delay))
        exchange = topo.delay_exchange
    else:
        headers = outgoing_headers(msg)
        exchange = topo.exchange
    lane = msg.lane
    return Envelope(
        exchange,
        topo.routing_key(lane),
        msg.body,
        True,
        headers,
        msg.id,
        int(msg.enqueued_at),
        lane.priority if lane.priority or topo.native_priority else None,
        headers.pop(CONTENT_TYPE, None),
    )


def routed_envelope(exchange: str, routing_key: str, msg: Outgoing) -> Envelope:
    """How ``publish(None, body, exchange=..., routing_key=...)`` sends ``msg``: through
    the user's exchange with the user's key, mandatory, with the same properties and
    headers as a message to a workq queue (so a workq consumer on the far side reads
    its id, tenant, priority and headers as usual)."""
    headers = outgoing_headers(msg)
    return Envelope(
        exchange,
        routing_key,
        msg.body,
        True,
        headers,
        msg.id,
        int(msg.enqueued_at),
        msg.lane.priority or None,
        headers.pop(CONTENT_TYPE, None),
    )


def routed_failure(exchange: str, routing_key: str, returned: bool, error: str) -> str | None:
    """Why a routed publish failed for good, or None if trying again may help (a nack, a
    lost connection, no confirm in time). The decision of both drivers; each says
    whether the broker returned the message (mandatory) and gives the error's text.

    >>> routed_failure("tenants", "x", True, "")  # doctest: +ELLIPSIS
    "no queue is bound to exchange 'tenants' for routing key 'x'..."
    """
    if returned:
        return (
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}: "
            "the broker returned the message (mandatory) and nothing was enqueued; bind a "
            "queue for that key, or check the key"
        )
    if "NOT_FOUND" in error and "exchange" in error:
        return (
            f"exchange {exchange!r} does not exist ({error}); nothing was enqueued: "
            "declare the exchange first, or check its name"
        )
    return None
