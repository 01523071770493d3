"""How workq messages map onto AMQP messages, and back; shared by both drivers.

No client library is imported here: each driver turns an :class:`Envelope` into its own
client's frames or properties, and a delivery's properties into :func:`received`.
:func:`envelope` is the one place that decides where a message is published.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...lanes import Lane
from ...messages import META_PREFIX, Outgoing, Received, split_meta
from .topology import DELAY, Topology, delay_ms

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
) -> Received:
    """A :class:`Received` from an AMQP delivery's properties."""
    raw = dict(headers or {})
    delivery_count = raw.get("x-delivery-count")
    strings = {
        k: (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
        if k not in BROKER_HEADERS and isinstance(v, str | bytes)
    }
    user, meta = split_meta(strings)
    meta.pop("reason", None)
    tenant = meta.get("tenant")
    prio = int(meta.get("priority", priority or 0))
    stored_attempt = int(meta.get("attempt", "1"))
    if topo.kind == "quorum":
        extra = int(delivery_count) if isinstance(delivery_count, int) else 0
    else:
        # Classic queues only say "delivered before": at least one more attempt.
        extra = 1 if redelivered else 0
    enqueued = meta.get("enqueued-at")
    return Received(
        lane=Lane(topo.name, tenant, prio),
        id=meta.get("id") or message_id or "",
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
        lane.priority if topo.native_priority else None,
    )
