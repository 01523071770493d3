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
"""

from __future__ import annotations

from . import aio
from .app import App
from .broker import Broker, connect
from .consumer import Consumer
from .delivery import Delivery
from .driver import DeadLetter, LaneStats, QueueStats
from .errors import (
    AlreadySettled,
    BrokerUnavailable,
    Closed,
    ConfigurationError,
    PublishError,
    Reject,
    Retry,
    Unsupported,
    WorkqError,
)
from .lanes import Lane
from .messages import Message
from .producer import MessageTooLarge, Producer
from .settings import Settings
from .spec import QueueSpec
from .worker import Worker

__version__ = "0.1.0"

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
    "Producer",
    "PublishError",
    "QueueSpec",
    "QueueStats",
    "Reject",
    "Retry",
    "Settings",
    "Unsupported",
    "Worker",
    "WorkqError",
    "aio",
    "connect",
]
