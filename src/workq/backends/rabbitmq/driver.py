"""``amqp://`` / ``amqps://``: the RabbitMQ backend's entry points.

The sync driver is on pika (``pika_driver.py``, ``receiver.py``, its connection in
``client.py``), the async one on aio-pika (``aio.py``) but for consuming, which goes
through the sync receiver on threads (``aio_consume.py``); both share ``topology.py``
(names and arguments), ``codec.py`` (messages and routing) and ``connection.py`` (TLS,
hosts, bounds). Neither client is imported until its driver is made: an async program
that only publishes never loads pika.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .connection import CAPABILITIES
from .settings import RabbitMQSettings

if TYPE_CHECKING:
    from .aio import AsyncRabbitMQDriver
    from .pika_driver import RabbitMQDriver

__all__ = ["CAPABILITIES", "RabbitMQDriver", "create_async_driver", "create_driver"]


def create_driver(settings: RabbitMQSettings) -> RabbitMQDriver:
    """The sync driver; connects at once, raising ``BrokerUnavailable`` if it cannot."""
    from .pika_driver import RabbitMQDriver

    return RabbitMQDriver(settings)


async def create_async_driver(settings: RabbitMQSettings) -> AsyncRabbitMQDriver:
    """The native aio-pika driver; connects at once."""
    from .aio import AsyncRabbitMQDriver

    return await AsyncRabbitMQDriver.connect(settings)


def __getattr__(name: str) -> Any:
    if name == "RabbitMQDriver":
        from .pika_driver import RabbitMQDriver

        return RabbitMQDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
