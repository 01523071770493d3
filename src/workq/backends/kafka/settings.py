"""Settings of the Kafka backend (no client library imported here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from pydantic import Field, SecretStr

from ...config import BackendSettings, parse_hosts


class KafkaSettings(BackendSettings):
    """``kafka://h1:9092,h2:9092?security_protocol=SASL_SSL&sasl_mechanism=PLAIN``."""

    schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    backend: Literal["kafka"] = "kafka"
    bootstrap_servers: list[str] = ["127.0.0.1:9092"]
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(6000, ge=6000)
    max_poll_interval_ms: int = Field(300000, ge=1000)
    group_prefix: str = "workq"

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

    def redacted_url(self) -> str:
        return f"kafka://{','.join(self.bootstrap_servers)}"
