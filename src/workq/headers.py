"""workq's metadata (id, attempt, enqueue time, lane) in message headers, for brokers
that carry it there (Kafka headers, RabbitMQ header table): every name starts with
:data:`META_PREFIX`, which users' headers may not use."""

from __future__ import annotations

from collections.abc import Mapping

from .checks import META_PREFIX

__all__ = ["META_PREFIX", "split_meta"]


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
