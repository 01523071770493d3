"""How workq messages look on the wire in Kafka: body as value, metadata in headers."""

from __future__ import annotations

import base64
import time
from typing import Any

from confluent_kafka import Message as KafkaMessage

from ...driver import Outgoing, Received
from ...headers import META_PREFIX, split_meta
from ...lanes import Lane
from .producing import Headers, Record

__all__ = ["NOT_BEFORE", "REASON", "decode", "decode_dead", "encode", "headers_of", "to_record"]

#: Unix time before which the message must not be handed out (delay, nack delay).
NOT_BEFORE = META_PREFIX + "not-before"
#: Why a message is in the dead-letter topic.
REASON = META_PREFIX + "reason"
_ID = META_PREFIX + "id"
_ATTEMPT = META_PREFIX + "attempt"
_ENQUEUED = META_PREFIX + "enqueued-at"
_PRIORITY = META_PREFIX + "priority"
_TENANT = META_PREFIX + "tenant"


def _key(msg: Outgoing, key_header: str | None) -> bytes | None:
    """The record key: ``publish(key=...)``, else the ``key_header`` header, else the tenant.

    Plain consumers partition and join on the key; the tenant is the natural one.
    """
    if msg.key is not None:
        return msg.key
    value = msg.headers.get(key_header) if key_header is not None else None
    if value is not None:
        return value.encode()
    return msg.lane.tenant.encode() if msg.lane.tenant is not None else None


def _headers(
    user: dict[str, str],
    id: str,
    attempt: int,
    enqueued_at: float,
    lane: Lane,
    not_before: float | None,
) -> Headers:
    """The user's headers, then workq's metadata (built as the list the client takes: a
    dict first cost a batch publish a tenth of its time)."""
    headers: Headers = [(k, v.encode()) for k, v in user.items()] if user else []
    headers += [
        (_ID, id.encode()),
        (_ATTEMPT, str(attempt).encode()),
        (_ENQUEUED, repr(enqueued_at).encode()),
        (_PRIORITY, str(lane.priority).encode()),
    ]
    if lane.tenant is not None:
        headers.append((_TENANT, lane.tenant.encode()))
    if not_before is not None:
        headers.append((NOT_BEFORE, repr(not_before).encode()))
    return headers


def encode(topic: str, msg: Outgoing, key_header: str | None) -> Record:
    """A record for a freshly published message."""
    not_before = time.time() + msg.delay if msg.delay else None
    return Record(
        topic=topic,
        value=msg.body,
        headers=_headers(msg.headers, msg.id, msg.attempt, msg.enqueued_at, msg.lane, not_before),
        key=_key(msg, key_header),
    )


def to_record(topic: str, item: Received, attempt: int, not_before: float | None) -> Record:
    """A record re-publishing a delivery (retry, delay bounce, dead letter)."""
    headers = _headers(item.headers, item.id, attempt, item.enqueued_at, item.lane, not_before)
    key = getattr(item.token, "key", None)
    return Record(topic=topic, value=item.body, headers=headers, key=key)


def _text(value: bytes | str | None) -> str:
    """A header value or key as text: UTF-8, else ``base64:`` and its base64."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    return value or ""


def headers_of(message: KafkaMessage) -> dict[str, str]:
    return {name: _text(value) for name, value in _pairs(message)}


def _pairs(message: KafkaMessage) -> list[tuple[str, bytes | str | None]]:
    raw = message.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else raw


def decode(
    message: KafkaMessage, lane: Lane, token: Any, key_header: str | None = "key"
) -> tuple[Received, float | None]:
    """A delivery from a Kafka message, and its not-before time if it has one.

    A record without workq's id header is a plain client's: its id is
    ``<topic>-<partition>-<offset>`` (the same on every redelivery) and its key, if any,
    shows as the ``key_header`` header unless the record has one of that name.
    """
    # One pass over the raw headers, not headers_of + split_meta: this runs for every
    # message on the poll thread, and the two passes cost about 3 us more each.
    user: dict[str, str] = {}
    mid = attempt = enqueued = not_before = None
    for name, value in _pairs(message):
        if not name.startswith(META_PREFIX):
            user[name] = _text(value)
        elif name == _ID:
            mid = _text(value)
        elif name == _ATTEMPT:
            attempt = _text(value)
        elif name == _ENQUEUED:
            enqueued = _text(value)
        elif name == NOT_BEFORE:
            not_before = _text(value)
    if mid is None and key_header is not None and key_header not in user:
        key = message.key()
        if key is not None:
            user[key_header] = _text(key)
    if enqueued is None:
        _, timestamp = message.timestamp()
        when = timestamp / 1000 if timestamp else time.time()
    else:
        when = _float(enqueued, time.time())
    item = Received(
        lane,
        mid or f"{message.topic()}-{message.partition()}-{message.offset()}",
        message.value() or b"",
        user,
        _int(attempt, 1),
        when,
        token,
    )
    return item, _float(not_before, 0.0) if not_before else None


def decode_dead(message: KafkaMessage, queue: str) -> tuple[Received, str]:
    """A message of ``queue``'s dead-letter topic: the delivery in its lane, and why."""
    item, _ = decode(message, Lane(queue), None)
    _, meta = split_meta(headers_of(message))
    item.lane = Lane(queue, meta.get("tenant") or None, _int(meta.get("priority"), 0))
    return item, meta.get("reason", "")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default
