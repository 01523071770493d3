"""workq's metadata (id, attempt, enqueue time, lane) in message headers, for brokers
that carry it there (Kafka headers, RabbitMQ header table): every name starts with
:data:`META_PREFIX`, which users' headers may not use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .checks import META_PREFIX

if TYPE_CHECKING:
    from .driver import Outgoing

__all__ = ["META_PREFIX", "meta_headers", "split_meta"]


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
