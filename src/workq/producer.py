"""Producers: publish and publish_many, with the message building shared by sync and async."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .driver import Capabilities, Driver
from .errors import PublishError
from .lanes import Lane
from .messages import CONTENT_TYPE, Message, Outgoing, build_outgoing, encode_body, new_ids
from .middleware import Chain
from .names import check_tenant
from .spec import QueueSpec

__all__ = ["MessageTooLarge", "Producer", "prepare"]


class MessageTooLarge(PublishError, ValueError):
    """The encoded body is larger than the backend accepts; nothing was sent."""


def prepare(
    spec: QueueSpec,
    capabilities: Capabilities,
    body: Any,
    *,
    tenant: str | None = None,
    priority: int = 0,
    headers: Mapping[str, str] | None = None,
    delay: float | None = None,
    message_id: str | None = None,
) -> Outgoing:
    """Validate and encode one message for ``spec``'s queue."""
    msg = build_outgoing(
        spec.name,
        body,
        tenant=check_tenant(tenant),
        priority=spec.check_priority(priority),
        headers=headers,
        delay=delay,
        message_id=message_id,
    )
    _check_size(spec, capabilities, len(msg.body))
    return msg


def _check_size(spec: QueueSpec, capabilities: Capabilities, size: int) -> None:
    limit = capabilities.max_body_size
    if limit is not None and size > limit:
        raise MessageTooLarge(
            f"message for queue {spec.name!r} is {size} bytes; the "
            f"{capabilities.backend} backend accepts at most {limit}: store the payload "
            "elsewhere and publish a reference to it"
        )


def prepare_many(
    spec: QueueSpec, capabilities: Capabilities, bodies: Iterable[Any]
) -> list[Outgoing]:
    """:func:`prepare` for each item. Plain bodies (not ``Message``) go to the default
    lane, which needs no checks, and share one enqueue time and one draw of random ids."""
    items = list(bodies)
    ids = new_ids(len(items))
    now = time.time()
    lane = Lane(spec.name)
    out = []
    for item, mid in zip(items, ids, strict=True):
        if isinstance(item, Message):
            out.append(
                prepare(
                    spec,
                    capabilities,
                    item.body,
                    tenant=item.tenant,
                    priority=item.priority,
                    headers=item.headers,
                    delay=item.delay,
                    message_id=item.message_id or mid,
                )
            )
            continue
        data, content_type = encode_body(item)
        _check_size(spec, capabilities, len(data))
        out.append(Outgoing(lane, mid, data, {CONTENT_TYPE: content_type}, None, 1, now))
    return out


class Producer:
    """Publishes messages; each call returns once the broker has durably accepted them.

    >>> with broker.producer() as p:                       # doctest: +SKIP
    ...     p.publish("reports", {"day": "2026-11-21"}, tenant="acme", priority=5)
    """

    def __init__(
        self, driver: Driver, spec_of: Callable[[str], QueueSpec], chain: Chain | None = None
    ) -> None:
        self._driver = driver
        self._spec_of = spec_of
        self._chain = chain or None  # an empty chain costs nothing per publish

    def _send(self, spec: QueueSpec, batch: Sequence[Outgoing]) -> None:
        chain = self._chain
        if chain is None:
            self._driver.publish(spec, batch)
            return
        ctx = chain.before_publish(spec.name, batch)
        try:
            self._driver.publish(spec, batch)
        except BaseException as exc:
            chain.after_publish(ctx, exc)
            raise
        chain.after_publish(ctx, None)

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        tenant: str | None = None,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message and return its id."""
        spec = self._spec_of(queue)
        msg = prepare(
            spec,
            self._driver.capabilities,
            body,
            tenant=tenant,
            priority=priority,
            headers=headers,
            delay=delay,
            message_id=message_id,
        )
        self._send(spec, [msg])
        return msg.id

    def publish_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Publish bodies or ``workq.Message`` objects together; return their ids in order."""
        spec = self._spec_of(queue)
        batch: Sequence[Outgoing] = prepare_many(spec, self._driver.capabilities, messages)
        if batch:
            self._send(spec, batch)
        return [m.id for m in batch]

    def close(self) -> None:
        """Nothing is buffered: every publish has returned confirmed."""

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
