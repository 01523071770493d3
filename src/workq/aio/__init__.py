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

The names are imported on first use (PEP 562), so ``workq.aio`` can be reached from a
plain ``import workq`` without loading asyncio until an async name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker import Broker, connect
    from .consumer import Consumer
    from .delivery import Delivery
    from .producer import Producer
    from .worker import Worker

__all__ = ["Broker", "Consumer", "Delivery", "Producer", "Worker", "connect"]

_LAZY = {
    "Broker": ".broker",
    "connect": ".broker",
    "Consumer": ".consumer",
    "Delivery": ".delivery",
    "Producer": ".producer",
    "Worker": ".worker",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'workq.aio' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
