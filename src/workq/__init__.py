"""workq: one work-queue API over RabbitMQ, SQS, Kafka, SQLite and memory.

>>> import workq
>>> with workq.connect("memory://") as broker:
...     with broker.producer() as p:
...         _ = p.publish("jobs", {"n": 1})
...     with broker.consumer("jobs") as c:
...         d = c.get(timeout=1.0)
...         d.json()
...         d.ack()
{'n': 1}

Names are imported on first use (PEP 562), so ``import workq`` stays cheap: a sync
program never loads ``workq.aio`` (and asyncio), and nothing loads pydantic-settings or
a backend's client library before it is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AlreadySettled,
    BrokerUnavailable,
    Closed,
    ConfigurationError,
    PublishError,
    QueueNotFound,
    Reject,
    Retry,
    Unsupported,
    WorkqError,
)

if TYPE_CHECKING:
    from . import aio
    from .app import App
    from .broker import Broker, connect
    from .consumer import Consumer
    from .delivery import Delivery
    from .driver import DeadLetter, LaneStats, QueueStats
    from .lanes import Lane
    from .message import Message
    from .middleware import Middleware, ProcessContext, PublishContext, SettleContext
    from .outcome import Outcome
    from .producer import MessageTooLarge, Producer
    from .retry import RetryPolicy
    from .settings import Settings
    from .spec import QueueSpec
    from .worker import Worker

__version__ = "0.2.0"

__all__ = [
    "AlreadySettled",
    "App",
    "Broker",
    "BrokerUnavailable",
    "Closed",
    "ConfigurationError",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "Lane",
    "LaneStats",
    "Message",
    "MessageTooLarge",
    "Middleware",
    "Outcome",
    "ProcessContext",
    "Producer",
    "PublishContext",
    "PublishError",
    "QueueNotFound",
    "QueueSpec",
    "QueueStats",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Settings",
    "SettleContext",
    "Unsupported",
    "Worker",
    "WorkqError",
    "aio",
    "connect",
]

# Where each lazily imported public name lives (module relative to this package).
_LAZY = {
    "App": ".app",
    "Broker": ".broker",
    "connect": ".broker",
    "Consumer": ".consumer",
    "Delivery": ".delivery",
    "DeadLetter": ".driver",
    "LaneStats": ".driver",
    "QueueStats": ".driver",
    "Lane": ".lanes",
    "Message": ".message",
    "Middleware": ".middleware",
    "ProcessContext": ".middleware",
    "PublishContext": ".middleware",
    "SettleContext": ".middleware",
    "Outcome": ".outcome",
    "RetryPolicy": ".retry",
    "MessageTooLarge": ".producer",
    "Producer": ".producer",
    "Settings": ".settings",
    "QueueSpec": ".spec",
    "Worker": ".worker",
}


def __getattr__(name: str) -> Any:
    if name == "aio":
        value: Any = importlib.import_module(".aio", __name__)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module 'workq' has no attribute {name!r}")
    # Cached in the module, so later lookups are ordinary attribute reads.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
