"""Settings of the Kafka backend (no client library imported here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from pydantic import Field, SecretStr, field_validator

from ...backend_settings import BackendSettings, parse_hosts

__all__ = ["KafkaSettings"]


class KafkaSettings(BackendSettings):
    """``kafka://h1:9092,h2:9092?security_protocol=SASL_SSL&sasl_mechanism=PLAIN``."""

    schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    backend: Literal["kafka"] = "kafka"
    #: ``host:port`` of the brokers to bootstrap from (from the URL).
    bootstrap_servers: list[str] = ["127.0.0.1:9092"]
    #: librdkafka's ``security.protocol``.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: SASL mechanism (``PLAIN``, ``SCRAM-SHA-512``...); ``PLAIN`` when a user is given.
    sasl_mechanism: str | None = None
    #: SASL user (the URL's user).
    sasl_username: str | None = None
    #: SASL password (the URL's password); masked in ``repr``, logs and errors.
    sasl_password: SecretStr | None = None
    #: CA bundle to verify the brokers' certificates.
    ssl_ca_location: str | None = None
    #: Client certificate.
    ssl_certificate_location: str | None = None
    #: Key of the client certificate.
    ssl_key_location: str | None = None
    #: Passphrase of an encrypted ``ssl_key_location``.
    ssl_key_password: SecretStr | None = None
    #: Partitions of each topic workq creates.
    partitions: int = Field(3, ge=1)
    #: Replicas of new topics; None: 3 (with ``min.insync.replicas=2``) on a cluster of
    #: 3 or more brokers, else 1.
    replication_factor: int | None = Field(None, ge=1)
    #: Consumer session timeout: how long a dead consumer keeps its partitions (with
    #: ``group_protocol=consumer``, where the brokers allow it; see there).
    session_timeout_ms: int = Field(6000, ge=6000)
    #: librdkafka's ``max.poll.interval.ms``; the poll thread never lets it lapse.
    max_poll_interval_ms: int = Field(300000, ge=1000)
    #: Starts every consumer group name workq makes (and topic names with
    #: ``default_lane=suffixed``).
    group_prefix: str = Field("workq", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: ``topic``: a queue's default lane is the topic named exactly as the queue
    #: (``topic_prefix`` + queue), other lanes ``<queue>.p<priority>[.<tenant>]`` beside
    #: it. ``suffixed``: the earlier names, ``<group_prefix>.<queue>.p0`` and so on.
    default_lane: Literal["topic", "suffixed"] = "topic"
    #: Starts every topic name workq makes or reads with ``default_lane=topic``.
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    #: Messages a consumer reads ahead of what it has handed out (beyond ``prefetch``),
    #: so it can pick by priority and tenant; partitions pause past this, resume at half.
    buffer: int = Field(10000, ge=1)
    #: Seconds a revoked partition's handed-out deliveries get to finish before the
    #: partition is given up (the new owner then gets them again).
    revoke_timeout: float = Field(5.0, ge=0)
    #: Longest a consumer holds a not-yet-due message aside; one due later is re-published
    #: (same not-before) so the partition's committed offset keeps moving.
    delay_hold: float = Field(5.0, gt=0)
    #: Seconds between asynchronous offset commits of done messages.
    commit_interval: float = Field(0.2, gt=0)
    #: Most messages taken from the client per poll.
    poll_batch: int = Field(500, ge=1)
    #: librdkafka's ``fetch.wait.max.ms`` for consumers: how long the broker holds an
    #: idle fetch. A fetch returns as soon as any of its partitions has a record, so a
    #: longer wait costs no latency on partitions being fetched; it sets how many fetch
    #: requests an idle consumer sends (each naming every partition it owns).
    fetch_wait_ms: int = Field(100, ge=1, le=10000)
    #: Seconds between full listings of the cluster's topics by a consumer that reads
    #: the queue's lane signals (``<queue>.lanes``, written by workq producers as they
    #: make lane topics, so new lanes are found at once). The listing finds lane topics
    #: made otherwise (plain clients, workq before 0.3) and forgets deleted ones. A
    #: consumer that cannot read the signals (no permission to create or read the
    #: topic) lists every second. A listing costs CPU per topic in the cluster, so with
    #: more than 40 topics per ``lane_sweep`` seconds it comes less often (1,000 topics:
    #: every 25 s).
    lane_sweep: float = Field(10.0, gt=0)
    #: Seconds a partition at its end goes on being fetched with nothing new; then it is
    #: paused until a workq producer's work note for its lane (read at once) or the next
    #: ``lane_idle_sweep`` finds it has records. An idle consumer's fetches then name
    #: only the partitions in use, whatever the tenant count. 0: fetch every partition
    #: always. At least 2 (a producer notes a lane at most once a second).
    lane_idle: float = Field(5.0, ge=0)
    #: Seconds between end-offset checks (one ListOffsets request) of the paused idle
    #: partitions: how soon a record from a producer that writes no work notes (a plain
    #: client, another library) is fetched from a lane that went idle. A sweep reads at
    #: most 500 partitions' ends a second on average, so with more sleeping partitions
    #: sweeps come less often (3,000: one every 6 s) and their cost stays flat.
    lane_idle_sweep: float = Field(2.0, gt=0)
    #: ``group``: a queue's consumers form a consumer group (each partition has one
    #: owner). ``share``: they form a share group (KIP-932, Kafka 4.2+; the client's
    #: support is a preview): any consumer takes any record, acknowledged one by one.
    mode: Literal["group", "share"] = "group"
    #: Group mode: the consumer group protocol. ``consumer`` (KIP-848, Apache Kafka
    #: 4.0+) has the broker assign partitions, so a new lane topic reaches its consumer
    #: without a group-wide rejoin. The broker then owns the session timeout: workq sets
    #: the group's ``consumer.session.timeout.ms`` to ``session_timeout_ms``, which
    #: brokers refuse below their ``group.consumer.min.session.timeout.ms`` (45 s by
    #: default; a crashed consumer's partitions then wait that long). ``auto``:
    #: ``consumer`` where the broker offers it, else ``classic`` (Tansu, older Kafka).
    group_protocol: Literal["auto", "classic", "consumer"] = "auto"
    #: Share mode: members (client share consumers) per workq consumer, at most its
    #: prefetch; each holds one record at a time.
    share_members: int = Field(4, ge=1, le=64)
    #: Share mode: the share group's acquisition lock in seconds
    #: (``share.record.lock.duration.ms``, set on the group; None keeps the broker's,
    #: 30 s by default). A handler running longer may see its message delivered again.
    share_lock_timeout: float | None = Field(None, ge=1, le=3600)
    #: The producer's ``linger.ms``. Unset: 0 for one record at a time (``publish``,
    #: re-publishing a retry or dead letter), sent at once; 5 for several (``publish_many``,
    #: a consumer's delay bounces), so they share requests. Setting it applies the value
    #: to both.
    linger_ms: int = Field(0, ge=0, le=60000)

    @field_validator("lane_idle")
    @classmethod
    def _idle_outlasts_notes(cls, value: float) -> float:
        if 0 < value < 2:
            raise ValueError(
                "lane_idle must be 0 (never pause idle partitions) or at least 2 seconds: "
                "producers note a lane's new records at most once a second"
            )
        return value

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        user, password, hosts = parse_hosts(url.netloc, 9092)
        values: dict[str, Any] = {}
        if hosts:
            values["bootstrap_servers"] = hosts
        if user:
            values["sasl_username"] = user
        if password is not None:
            values["sasl_password"] = password
        return values

    def client_config(self) -> dict[str, str | int]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        conf: dict[str, str | int] = {
            "bootstrap.servers": ",".join(self.bootstrap_servers),
            "security.protocol": self.security_protocol,
            "socket.connection.setup.timeout.ms": int(self.connect_timeout * 1000),
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        if self.sasl_username and "sasl.mechanism" not in conf:
            conf["sasl.mechanism"] = "PLAIN"
        return conf

    def redacted_url(self) -> str:
        return f"kafka://{','.join(self.bootstrap_servers)}"
