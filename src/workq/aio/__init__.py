"""workq.aio: the async twin of the sync API. Same names, same semantics.

Every call that does I/O is a coroutine; ``producer()``, ``consumer()`` and ``worker()``
are plain calls returning async context managers; consumers are ``async for``.

>>> import asyncio, workq
>>> async def main():
...     async with await workq.aio.connect("memory://") as broker:
...         async with broker.producer() as p:
...             await p.publish("jobs", "hello")
...         async with broker.consumer("jobs") as c:
...             d = await c.get(timeout=1.0)
...             await d.ack()
...             return d.text()
>>> asyncio.run(main())
'hello'
"""

from __future__ import annotations

from .broker import Broker, connect
from .consumer import Consumer
from .delivery import Delivery
from .producer import Producer
from .worker import Worker

__all__ = ["Broker", "Consumer", "Delivery", "Producer", "Worker", "connect"]
