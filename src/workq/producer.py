"""Producers: publish and publish_many, with the message building shared by sync and async."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from .checks import Gate
from .codec import CONTENT_TYPE, build_outgoing, encode_body
from .driver import ROUTED, Capabilities, Driver, Outgoing
from .errors import ConfigurationError, PublishError, Unsupported
from .ids import new_ids
from .lanes import Lane
from .message import Message
from .middleware import Chain
from .names import check_tenant
from .spec import QueueSpec

__all__ = [
    "MessageTooLarge",
    "Producer",
    "check_batch",
    "draft",
    "draft_many",
    "draft_to",
    "fit",
    "fit_many",
    "prepare",
    "prepare_many",
    "route_of",
]

#: Exchange names AMQP allows: letters, digits, ``-``, ``_``, ``.``, ``:``; up to 255.
_EXCHANGE = re.compile(r"[A-Za-z0-9_.:-]{0,255}")


class MessageTooLarge(PublishError, ValueError):
    """The encoded body is larger than the backend accepts; nothing was sent."""


def draft(
    queue: str,
    body: Any,
    *,
    tenant: str | None = None,
    priority: int = 0,
    headers: Mapping[str, str] | None = None,
    delay: float | None = None,
    message_id: str | None = None,
    key: str | bytes | None = None,
) -> Outgoing:
    """Check and encode one message: everything that needs no queue spec, so that bad
    arguments fail before any I/O (even the declaration of a queue on first use)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(
            f"priority={priority!r} is a {type(priority).__name__}: it must be an int "
            "0..max_priority of the queue"
        )
    if key is not None and not isinstance(key, str | bytes):
        raise TypeError(
            f"key={key!r} is a {type(key).__name__}: it must be str or bytes (a "
            "partitioning hint such as a customer id), or None"
        )
    msg = build_outgoing(
        queue,
        body,
        tenant=check_tenant(tenant),
        priority=priority,
        headers=headers,
        delay=delay,
        message_id=message_id,
    )
    if key is not None:
        msg.key = key.encode() if isinstance(key, str) else bytes(key)
    return msg


def route_of(
    capabilities: Capabilities,
    queue: str | None,
    exchange: str | None,
    routing_key: str | None,
    *,
    priority: int = 0,
    delay: float | None = None,
) -> tuple[str, str] | None:
    """Where a publish goes: ``None`` for a workq queue, else ``(exchange, routing_key)``.

    The one decision of the sync and async producers, made before any I/O: an exchange
    needs ``queue=None`` and a backend that routes through exchanges (else
    ``Unsupported``); a routing key needs an exchange; delays need a workq queue.

    >>> route_of(Capabilities("rabbitmq", exchange_routing=True), None, "tenants", "acme")
    ('tenants', 'acme')
    """
    if exchange is None:
        if routing_key is not None:
            raise ValueError(
                f"routing_key={routing_key!r} needs exchange=...: give the exchange to route "
                "through, or leave routing_key out to publish to the queue"
            )
        if queue is None:
            # The class of any other bad queue name (check_queue).
            raise ConfigurationError("queue=None needs exchange=...: name the queue to publish to")
        return None
    if not capabilities.exchange_routing:
        raise Unsupported(capabilities.backend, ROUTED)
    if queue is not None:
        raise ValueError(
            f"publish({queue!r}, ..., exchange={exchange!r}) names both a queue and an "
            "exchange: give queue=None, the exchange and routing key decide which queues "
            "get the message"
        )
    if not isinstance(exchange, str) or not _EXCHANGE.fullmatch(exchange):
        raise ValueError(
            f"exchange={exchange!r} is not an exchange name: letters, digits, '-', '_', "
            "'.', ':' (at most 255), or '' for the default exchange"
        )
    key = "" if routing_key is None else routing_key
    if not isinstance(key, str) or len(key.encode()) > 255:
        raise ValueError(
            f"routing_key={routing_key!r} must be a str of at most 255 bytes (or None for '')"
        )
    if delay:
        raise ValueError(
            f"delay={delay!r} is not available with exchange={exchange!r}: the exchange "
            "routes at once; publish to a workq queue to delay a message"
        )
    if isinstance(priority, int) and not 0 <= priority <= 255:
        raise ValueError(f"priority={priority!r} must be 0..255 (an AMQP priority)")
    return exchange, key


def draft_to(
    capabilities: Capabilities,
    queue: str | None,
    body: Any,
    *,
    exchange: str | None = None,
    routing_key: str | None = None,
    **options: Any,
) -> tuple[Outgoing, tuple[str, str] | None]:
    """:func:`route_of`, then :func:`draft` (``options`` are its keywords): what both
    producers decide about one ``publish()`` before any I/O. A routed message's lane
    names its exchange (middleware sees that name); a queue's message still needs
    :func:`fit` once its spec is known."""
    route = route_of(
        capabilities,
        queue,
        exchange,
        routing_key,
        priority=options.get("priority", 0),
        delay=options.get("delay"),
    )
    # route_of returns None only for a queue given (not None).
    msg = draft(cast(str, queue) if route is None else route[0], body, **options)
    if route is not None:
        _check_size(route[0], capabilities, len(msg.body), "exchange")
    return msg, route


def fit(spec: QueueSpec, capabilities: Capabilities, msg: Outgoing) -> Outgoing:
    """Check a drafted message against its queue and backend: priority range, size."""
    spec.check_priority(msg.lane.priority)
    _check_size(spec.name, capabilities, len(msg.body))
    return msg


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
    key: str | bytes | None = None,
) -> Outgoing:
    """Validate and encode one message for ``spec``'s queue (:func:`draft` then :func:`fit`)."""
    msg = draft(
        spec.name,
        body,
        tenant=tenant,
        priority=priority,
        headers=headers,
        delay=delay,
        message_id=message_id,
        key=key,
    )
    return fit(spec, capabilities, msg)


def _check_size(name: str, capabilities: Capabilities, size: int, kind: str = "queue") -> None:
    """``name`` of the ``kind`` ("queue" or "exchange") the message goes to."""
    limit = capabilities.max_body_size
    if limit is not None and size > limit:
        raise MessageTooLarge(
            f"message for {kind} {name!r} is {size} bytes; the "
            f"{capabilities.backend} backend accepts at most {limit}: store the payload "
            "elsewhere and publish a reference to it"
        )


def check_batch(messages: Any) -> None:
    """``publish_many`` takes an iterable of bodies or ``Message`` objects, not one body."""
    if isinstance(messages, str | bytes | bytearray | memoryview | dict | Message) or not (
        isinstance(messages, Iterable)
    ):
        raise TypeError(
            f"messages={messages!r} is a {type(messages).__name__}: publish_many takes a list "
            "(or other iterable) of bodies or workq.Message objects; use publish() for one"
        )


def draft_many(queue: str, bodies: Iterable[Any]) -> list[Outgoing]:
    """:func:`draft` for each item. Plain bodies (not ``Message``) go to the default
    lane, which needs no checks, and share one enqueue time and one draw of random ids."""
    check_batch(bodies)
    items = list(bodies)
    ids = new_ids(len(items))
    now = time.time()
    lane = Lane(queue)
    out = []
    for item, mid in zip(items, ids, strict=True):
        if isinstance(item, Message):
            out.append(
                draft(
                    queue,
                    item.body,
                    tenant=item.tenant,
                    priority=item.priority,
                    headers=item.headers,
                    delay=item.delay,
                    message_id=mid if item.message_id is None else item.message_id,
                    key=item.key,
                )
            )
            continue
        data, content_type = encode_body(item)
        out.append(Outgoing(lane, mid, data, {CONTENT_TYPE: content_type}, None, 1, now))
    return out


def fit_many(spec: QueueSpec, capabilities: Capabilities, batch: list[Outgoing]) -> list[Outgoing]:
    """:func:`fit` for each drafted message."""
    for msg in batch:
        if msg.lane.priority:
            spec.check_priority(msg.lane.priority)
    if capabilities.max_body_size is not None:
        for msg in batch:
            _check_size(spec.name, capabilities, len(msg.body))
    return batch


def prepare_many(
    spec: QueueSpec, capabilities: Capabilities, bodies: Iterable[Any]
) -> list[Outgoing]:
    """:func:`draft_many` then :func:`fit_many`."""
    return fit_many(spec, capabilities, draft_many(spec.name, bodies))


class Producer:
    """Publishes messages; each call returns once the broker has durably accepted them.

    After ``close()`` (or its broker's) every call raises ``workq.Closed``.

    Example:
        ```python
        with broker.producer() as p:
            p.publish("reports", {"day": "2026-11-21"}, tenant="acme", priority=5)
        ```
    """

    def __init__(
        self,
        driver: Driver,
        spec_of: Callable[[str], QueueSpec],
        *,
        parent: Gate | None = None,
        chain: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._spec_of = spec_of
        self._gate = Gate("producer", parent)
        self._chain = chain or None  # an empty chain costs nothing per publish

    def _send(self, target: QueueSpec | tuple[str, str], batch: Sequence[Outgoing]) -> None:
        """Publish ``batch`` to a queue (its spec) or through ``(exchange, routing_key)``,
        wrapped in the middleware; a routed publish shows under the exchange's name."""
        chain = self._chain
        if chain is None:
            self._publish(target, batch)
            return
        name = target.name if isinstance(target, QueueSpec) else target[0]
        ctx = chain.before_publish(name, batch)
        try:
            self._publish(target, batch)
        except BaseException as exc:
            chain.after_publish(ctx, exc)
            raise
        chain.after_publish(ctx, None)

    def _publish(self, target: QueueSpec | tuple[str, str], batch: Sequence[Outgoing]) -> None:
        if isinstance(target, QueueSpec):
            self._driver.publish(target, batch)
        else:
            self._driver.publish_routed(target[0], target[1], batch)

    @property
    def closed(self) -> bool:
        """True once this producer or its broker is closed."""
        return not self._gate.is_open

    def publish(
        self,
        queue: str | None,
        body: Any,
        *,
        tenant: str | None = None,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        message_id: str | None = None,
        key: str | bytes | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> str:
        """Publish one message and return its id.

        Returns only once the broker has durably accepted the message (publisher
        confirm, SQS 200, Kafka delivery report).

        Args:
            queue: The queue; declared with defaults on first use. ``None`` with
                ``exchange``.
            body: ``bytes``, ``str``, a JSON-able ``dict`` or ``list``, or a pydantic
                model (stored as JSON with a ``content-type`` header).
            tenant: The tenant's lane, ``[A-Za-z0-9_-]{1,64}``; ``None`` for the default.
            priority: ``0..max_priority`` of the queue; higher is delivered first.
            headers: String headers delivered with the message.
            delay: Seconds before it may be delivered; ``None`` for at once.
            message_id: The id to use; ``None`` to have one made.
            key: A partitioning and ordering hint, ``str`` or ``bytes``: the Kafka
                record key (by default the tenant); other backends ignore it.
            exchange: RabbitMQ only: publish through this exchange (``""`` is the
                default exchange) instead of to a workq queue, with ``queue=None``; the
                exchange's bindings decide where it goes. Confirmed and mandatory: a
                message no queue takes raises ``PublishError``. No ``delay``. Other
                backends raise ``Unsupported`` before any I/O.
            routing_key: The routing key for ``exchange`` (default ``""``).

        Returns:
            The message id.

        Raises:
            TypeError: A body, header or argument of the wrong type (before any I/O).
            ValueError: A priority out of range, a bad tenant name or a negative delay.
            MessageTooLarge: The encoded message is larger than the backend accepts.
            PublishError: The broker did not confirm it after the bounded retries, or
                (with ``exchange``) no queue took it or the exchange does not exist.
            Unsupported: ``exchange`` on a backend without exchanges.
            Closed: The producer or its broker is closed.

        Examples:
            ```python
            mid = p.publish("reports", {"day": "2026-11-21"}, tenant="acme", priority=5)
            p.publish(None, {"order": 7}, exchange="tenants", routing_key="acme")
            ```
        """
        self._gate.check("publish")
        msg, route = draft_to(
            self._driver.capabilities,
            queue,
            body,
            tenant=tenant,
            priority=priority,
            headers=headers,
            delay=delay,
            message_id=message_id,
            key=key,
            exchange=exchange,
            routing_key=routing_key,
        )
        if route is not None:
            self._send(route, [msg])
            return msg.id
        spec = self._spec_of(msg.lane.queue)
        self._send(spec, [fit(spec, self._driver.capabilities, msg)])
        return msg.id

    def publish_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Publish bodies or ``workq.Message`` objects together; return their ids in order.

        Returns once every message is confirmed by the broker; faster than ``publish``
        in a loop.

        Args:
            queue: The queue; declared with defaults on first use.
            messages: Bodies (as for ``publish``) and ``workq.Message`` objects (a body
                with its own tenant, priority, headers, delay or id).

        Returns:
            The message ids, in the order given.

        Raises:
            TypeError: ``messages`` is one body rather than an iterable, or an item is
                of the wrong type (before any I/O).
            ValueError: A priority out of range, a bad tenant name or a negative delay.
            MessageTooLarge: A message is larger than the backend accepts.
            PublishError: Not every message was confirmed after the bounded retries.
            Closed: The producer or its broker is closed.

        Example:
            ```python
            ids = p.publish_many("reports", [
                {"day": "2026-11-20"},
                workq.Message({"day": "2026-11-21"}, priority=9),
            ])
            ```
        """
        self._gate.check("publish_many")
        batch = draft_many(queue, messages)
        spec = self._spec_of(queue)
        if batch:
            self._send(spec, fit_many(spec, self._driver.capabilities, batch))
        return [m.id for m in batch]

    def close(self) -> None:
        """Nothing is buffered (every publish has returned confirmed): later calls raise
        ``workq.Closed``. Idempotent."""
        self._gate.close()

    def __enter__(self) -> Producer:
        self._gate.check("use")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
