"""Topic and group names of the Kafka backend (no client library imported here).

``default_lane="topic"`` (the default): a queue's default lane is the topic named
exactly as the queue (``<topic_prefix><queue>``), so plain clients of topic ``orders``
meet workq's queue ``orders``; its other lanes are ``<queue>.p<priority>`` and
``<queue>.p<priority>.<tenant>`` beside it, ``<queue>.dlq`` holds dead letters and
``<queue>.lanes`` the names of lane topics as producers make them (see :mod:`.lanewatch`).
``default_lane="suffixed"`` keeps the earlier names: ``<ns>.<queue>.p<priority>[.<tenant>]``
and ``<ns>.<queue>.dlq``. Queue and tenant names never contain ``.``, so names parse
back unambiguously: ``orders.archive`` or ``orders-eu`` are never lanes of ``orders``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...lanes import Lane
from ...names import NAME_PATTERN

__all__ = ["Naming"]


class Naming:
    """Names of one namespace (``group_prefix``): topics, consumer groups.

    Args:
        namespace: Starts every consumer group name (and, suffixed, every topic name).
        suffixed: Use the earlier ``<ns>.<queue>.p0`` name for the default lane.
        topic_prefix: Starts every topic name when not ``suffixed``.

    Example:
        >>> Naming("workq").lane_topic(Lane("orders"))
        'orders'
        >>> Naming("workq", suffixed=True).lane_topic(Lane("orders"))
        'workq.orders.p0'
    """

    def __init__(self, namespace: str, *, suffixed: bool = False, topic_prefix: str = "") -> None:
        self.namespace = namespace
        self.suffixed = suffixed
        self.topic_prefix = topic_prefix

    def _base(self, queue: str) -> str:
        if self.suffixed:
            return f"{self.namespace}.{queue}"
        return f"{self.topic_prefix}{queue}"

    def lane_topic(self, lane: Lane) -> str:
        base = self._base(lane.queue)
        if not self.suffixed and lane.tenant is None and lane.priority == 0:
            return base
        base = f"{base}.p{lane.priority}"
        return base if lane.tenant is None else f"{base}.{lane.tenant}"

    def lane_of(self, topic: str, queue: str) -> Lane | None:
        """The lane a topic holds, if it is one of ``queue``'s lane topics."""
        base = self._base(queue)
        if topic == base and not self.suffixed:
            return Lane(queue)
        prefix = base + "."
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split(".")
        if len(parts) > 2 or not parts[0].startswith("p") or not parts[0][1:].isdigit():
            return None
        tenant = parts[1] if len(parts) == 2 else None
        if tenant == "":
            return None
        priority = int(parts[0][1:])
        if not self.suffixed and tenant is None and priority == 0:
            # The default lane is the bare topic; ``orders.p0`` is not one of its names.
            return None
        return Lane(queue, tenant, priority)

    def queues(self, topics: Iterable[str]) -> list[str]:
        """The queues whose lane or dead-letter topics are among ``topics``.

        With ``default_lane="topic"`` a bare topic is a queue's default lane, so every
        topic named as a queue counts (a plain topic is a queue workq adopts as it is),
        except those starting with ``_``: Kafka's own (``__consumer_offsets``) and its
        tools' (``_schemas``).

        >>> Naming("workq").queues(["orders", "orders.p5.acme", "b.dlq", "a.b", "__x"])
        ['b', 'orders']
        >>> Naming("workq", suffixed=True).queues(["workq.a.p0", "orders", "workq.b.dlq"])
        ['a', 'b']
        """
        start = f"{self.namespace}." if self.suffixed else self.topic_prefix
        found = set()
        for topic in topics:
            if not topic.startswith(start) or topic.startswith("_"):
                continue
            queue = topic[len(start) :].split(".", 1)[0]
            if not NAME_PATTERN.fullmatch(queue):
                continue
            if self.lane_of(topic, queue) is not None or topic == self.dlq_topic(queue):
                found.add(queue)
        return sorted(found)

    def dlq_topic(self, queue: str) -> str:
        return f"{self._base(queue)}.dlq"

    def signal_topic(self, queue: str) -> str:
        """The queue's lane-signal topic: names of lane topics, written as they are made.

        Not a lane (``lanes`` does not start with ``p``), so never taken for a queue.

        >>> Naming("workq").signal_topic("orders")
        'orders.lanes'
        >>> Naming("workq").queues(["orders.lanes"])
        []
        """
        return f"{self._base(queue)}.lanes"

    def group(self, queue: str) -> str:
        """The consumer group of a queue's consumers."""
        return f"{self.namespace}.{queue}"

    def share_group(self, queue: str) -> str:
        """The share group of a queue's consumers in ``mode=share``.

        Not the consumer group's name: a group id is either kind, never both.
        """
        return f"{self.namespace}.{queue}.share"

    def redrive_group(self, queue: str) -> str:
        """The group whose committed offset on the DLQ marks how far redrive got."""
        return f"{self.namespace}.{queue}.redrive"
