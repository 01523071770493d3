"""How the queue's consumer and share groups are set up on the broker (admin requests).

Which group protocol to use (``group_protocol=auto`` asks the broker once), the KIP-848
group's session timeout and assignment interval, and a share group's start offset,
delivery limit and lock duration. Separate from the driver so that its admin requests,
and the broker errors they explain, sit in one place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from ...errors import ConfigurationError
from ...spec import QueueSpec
from .settings import KafkaSettings
from .topics import Naming

if TYPE_CHECKING:
    from confluent_kafka.admin._metadata import ClusterMetadata

__all__ = ["Groups"]

log = logging.getLogger("workq.kafka")


class Groups:
    """One driver's group setup: the protocol in use and the groups configured so far."""

    def __init__(
        self,
        admin: AdminClient,
        settings: KafkaSettings,
        naming: Naming,
        metadata: Callable[[], ClusterMetadata],
    ) -> None:
        self._admin = admin
        self.settings = settings
        self.naming = naming
        self._metadata = metadata
        self._lock = threading.Lock()
        self._share_groups: set[str] = set()
        self._configured: set[str] = set()  # consumer groups given their session timeout
        self._protocol: str | None = None

    def protocol(self) -> str:
        """``classic`` or ``consumer``: ``group_protocol``, with ``auto`` resolved once.

        ``auto`` asks a broker for ``group.coordinator.rebalance.protocols``; a broker
        that does not answer it (Tansu, Kafka before 4.0) gets ``classic``.
        """
        if self.settings.group_protocol != "auto":
            return self.settings.group_protocol
        if self._protocol is None:
            self._protocol = "classic"
            try:
                broker = next(iter(self._metadata().brokers))
                resource = ConfigResource(ResourceType.BROKER, str(broker))
                future = self._admin.describe_configs(
                    [resource], request_timeout=self.settings.connect_timeout
                )[resource]
                entry = future.result().get("group.coordinator.rebalance.protocols")
                if entry is not None and "consumer" in str(entry.value).split(","):
                    self._protocol = "consumer"
            except (KafkaException, StopIteration) as exc:
                log.info("Kafka group protocol: classic (%s)", exc)
        return self._protocol

    def configure_consumer_group(self, spec: QueueSpec) -> None:
        """KIP-848: ask for ``session_timeout_ms`` and prompt assignments on the queue's
        group (best effort).

        Under the consumer protocol the broker owns the session timeout: the group's
        ``consumer.session.timeout.ms``, within the broker's
        ``group.consumer.min.session.timeout.ms`` (45 s by default) and max. A broker that
        refuses keeps its own, and a crashed consumer's partitions wait that long.
        """
        group = self.naming.group(spec.name)
        with self._lock:
            if group in self._configured:
                return
            self._configured.add(group)
        session = self.settings.session_timeout_ms
        try:
            # Kafka 4.3+ computes a group's assignment at most once a second by default:
            # a lane made within a second of the last one would wait for it.
            self._alter_group(group, [("consumer.assignment.interval.ms", "0")])
        except KafkaException as exc:
            log.info(
                "queue %r: the group keeps the broker's assignment interval: %s", spec.name, exc
            )
        try:
            self._alter_group(
                group,
                [
                    ("consumer.session.timeout.ms", str(session)),
                    # A few heartbeats per session, as the classic protocol's default ratio.
                    ("consumer.heartbeat.interval.ms", str(max(session // 3, 1000))),
                ],
            )
        except KafkaException as exc:
            log.warning(
                "queue %r: the broker keeps its own consumer-group session timeout "
                "(group.consumer.session.timeout.ms, 45 s by default), not "
                "session_timeout_ms=%d: %s; lower group.consumer.min.session.timeout.ms "
                "and group.consumer.min.heartbeat.interval.ms on the brokers for faster "
                "failover, or use group_protocol=classic",
                spec.name,
                session,
                exc,
            )

    def _alter_group(self, group: str, entries: list[tuple[str, str]]) -> None:
        """Set configs of a group (one request; KafkaException if the broker refuses)."""
        resource = ConfigResource(
            ResourceType.GROUP,
            group,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in entries
            ],
        )
        self._admin.incremental_alter_configs(
            [resource], request_timeout=self.settings.connect_timeout
        )[resource].result()

    def configure_share_group(self, spec: QueueSpec) -> int:
        """Set the queue's share group up as a work queue; return its delivery limit.

        A share group starts at the end of a partition unless told otherwise, and the
        broker archives a record delivered ``share.delivery.count.limit`` times (5 by
        default): a work queue starts at the oldest record, and workq's own
        ``max_attempts`` must come first so the message goes to the DLQ topic.
        """
        group = self.naming.share_group(spec.name)
        limit = min(max(spec.max_attempts + 1, 2), 10)
        with self._lock:
            if group in self._share_groups:
                return limit
        entries = [
            ("share.auto.offset.reset", "earliest"),
            ("share.delivery.count.limit", str(limit)),
        ]
        if self.settings.share_lock_timeout is not None:
            lock_ms = int(self.settings.share_lock_timeout * 1000)
            entries.append(("share.record.lock.duration.ms", str(lock_ms)))
        resource = ConfigResource(
            ResourceType.GROUP,
            group,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in entries
            ],
        )
        future = self._admin.incremental_alter_configs(
            [resource], request_timeout=self.settings.connect_timeout
        )[resource]
        try:
            future.result()
        except KafkaException as exc:
            raise ConfigurationError(
                f"cannot configure the share group {group!r} at "
                f"{self.settings.redacted_url()}: {exc}; share groups need Apache Kafka "
                "4.2+ with the share.version feature on (and, for share_lock_timeout, a "
                "value within group.share.min/max.record.lock.duration.ms)"
            ) from None
        with self._lock:
            self._share_groups.add(group)
        return limit
