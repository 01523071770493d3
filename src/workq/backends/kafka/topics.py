"""Topic and group names of the Kafka backend (no client library imported here).

One topic per lane: ``<ns>.<queue>.p<priority>`` for the default tenant and
``<ns>.<queue>.p<priority>.<tenant>`` for a tenant; ``<ns>.<queue>.dlq`` holds dead
letters. Queue and tenant names never contain ``.``, so names parse back unambiguously.
"""

from __future__ import annotations

from ...lanes import Lane

__all__ = ["Naming"]


class Naming:
    """Names of one namespace (``group_prefix``): topics, consumer groups."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def lane_topic(self, lane: Lane) -> str:
        base = f"{self.namespace}.{lane.queue}.p{lane.priority}"
        return base if lane.tenant is None else f"{base}.{lane.tenant}"

    def lane_of(self, topic: str, queue: str) -> Lane | None:
        """The lane a topic holds, if it is one of ``queue``'s lane topics."""
        prefix = f"{self.namespace}.{queue}."
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split(".")
        if len(parts) > 2 or not parts[0].startswith("p") or not parts[0][1:].isdigit():
            return None
        tenant = parts[1] if len(parts) == 2 else None
        if tenant == "":
            return None
        return Lane(queue, tenant, int(parts[0][1:]))

    def dlq_topic(self, queue: str) -> str:
        return f"{self.namespace}.{queue}.dlq"

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
