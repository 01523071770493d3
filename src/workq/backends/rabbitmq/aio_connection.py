"""The async RabbitMQ driver's connection (aio-pika): connected within the bound across
the host list, its channels, and dropped when the network goes silent.

The twin of the sync driver's I/O thread and watchdog (``client.py``), on asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from ...errors import BrokerUnavailable, PublishError
from ...retrying import CONNECT
from .connection import CLOSE_TIMEOUT, Deadline, connect_failed, endpoints, tls_context
from .settings import RabbitMQSettings
from .topology import Declared

__all__ = ["CONNECTION_ERRORS", "GONE", "AsyncConnection", "bounded"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)


CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)
CHANNEL_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *CONNECTION_ERRORS)
GONE: tuple[type[BaseException], ...] = (BrokerUnavailable, PublishError, *CONNECTION_ERRORS)

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound="AsyncConnection")


def bounded(
    fn: Callable[Concatenate[C, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[C, P], Coroutine[Any, Any, R]]:
    """Bound a call by ``connect_timeout + publish_timeout``, as the sync driver bounds
    every call: on a silent network the connection is dropped and the call raises."""

    @functools.wraps(fn)
    async def run(driver: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        limit = driver.settings.connect_timeout + driver.settings.publish_timeout
        try:
            async with asyncio.timeout(limit):
                return await fn(driver, *args, **kwargs)
        except TimeoutError as exc:
            driver.drop()
            raise BrokerUnavailable(
                f"RabbitMQ at {driver.settings.redacted_url()} did not answer within {limit}s; "
                "it reconnects on the next call"
            ) from exc
        except CONNECTION_ERRORS as exc:
            # A connection reset under the call (a broker drop): an outage, as the sync
            # twin's IOThread.call reports it, so callers that ride out outages do.
            driver.drop()
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {driver.settings.redacted_url()} "
                f"({exc!r}); it reconnects on the next call"
            ) from exc

    return run


class AsyncConnection:
    """One aio-pika connection, re-made on the next call after it is lost or dropped,
    with a channel for declarations (``admin``) and a confirm channel (``pub``)."""

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.conn: Any = None
        self.generation = 0
        self._lock = asyncio.Lock()
        self._admin: AbstractChannel | None = None
        self._pub: AbstractChannel | None = None
        #: What was declared on this connection (forgotten when it is re-made).
        self._declared = Declared()
        self._closing: set[asyncio.Task[Any]] = set()

    async def connection(self) -> AbstractRobustConnection:
        if self.conn is not None and not self.conn.is_closed:
            conn: AbstractRobustConnection = self.conn
            return conn
        async with self._lock:
            if self.conn is not None and not self.conn.is_closed:
                return self.conn  # type: ignore[no-any-return]
            self.conn = await self._connect()
            self.generation += 1
            self._admin = self._pub = None
            self._declared = Declared()
            return self.conn  # type: ignore[no-any-return]

    async def _connect(self) -> Any:
        """Connect within ``connect_timeout`` in all, retries over the host list included."""
        s = self.settings
        deadline = Deadline(s.connect_timeout)
        hosts = endpoints(s)
        tries = 0

        async def once() -> Any:
            last: BaseException | None = None
            for i, (host, port) in enumerate(hosts):
                budget = deadline.left() / (len(hosts) - i)
                try:
                    async with asyncio.timeout(max(budget, 0.1)):
                        return await aio_pika.connect(
                            host=host,
                            port=port,
                            login=s.username,
                            password=s.password.get_secret_value(),
                            virtualhost=s.vhost,
                            ssl=s.tls,
                            ssl_context=tls_context(s) if s.tls else None,
                            timeout=max(budget, 0.1),
                            heartbeat=s.heartbeat,
                        )
                except CONNECT_ERRORS as exc:
                    last = exc
            assert last is not None
            raise last

        try:
            async for attempt in CONNECT.async_retrying(
                CONNECT_ERRORS, attempts=s.reconnect_attempts, deadline=deadline
            ):
                with attempt:
                    tries += 1
                    return await once()
        except CONNECT_ERRORS as exc:
            raise connect_failed(s, tries, exc) from exc
        raise BrokerUnavailable(f"cannot connect to RabbitMQ at {s.redacted_url()}")

    async def channel(self, confirms: bool = False) -> AbstractChannel:
        conn = await self.connection()
        try:
            return await conn.channel(publisher_confirms=confirms, on_return_raises=confirms)
        except CHANNEL_ERRORS:
            # aio-pika may not have noticed yet that the connection is gone: start afresh.
            await self.reset()
            conn = await self.connection()
            return await conn.channel(publisher_confirms=confirms, on_return_raises=confirms)

    async def reset(self) -> None:
        """Drop the connection; the next call reconnects (across the host list)."""
        conn, self.conn = self.conn, None
        self._admin = self._pub = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)

    def drop(self) -> None:
        """Give up on the connection at once (closing it in the background, bounded);
        the next call reconnects. For a connection that no longer answers."""
        conn, self.conn = self.conn, None
        self._admin = self._pub = None
        if conn is not None:
            task = asyncio.get_running_loop().create_task(
                asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def admin(self) -> AbstractChannel:
        if self._admin is None or self._admin.is_closed:
            self._admin = await self.channel()
        return self._admin

    async def pub(self) -> AbstractChannel:
        if self._pub is None or self._pub.is_closed:
            self._pub = await self.channel(confirms=True)
        return self._pub

    async def reset_pub(self) -> None:
        """Close the confirm channel; the next publish opens a new one (as the sync twin)."""
        ch, self._pub = self._pub, None
        if ch is not None and not ch.is_closed:
            with contextlib.suppress(Exception):
                await ch.close()
