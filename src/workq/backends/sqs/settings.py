"""Settings of the SQS backend (no client library imported here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from pydantic import Field, SecretStr

from ...backend_settings import BackendSettings

__all__ = ["SQSSettings"]


class SQSSettings(BackendSettings):
    """``sqs://REGION?endpoint_url=http://127.0.0.1:4566``; credentials from the AWS chain.

    ``wait_time_seconds`` caps a long poll; ``queue_prefix`` starts every SQS queue name
    (at most 20 of ``[A-Za-z0-9_-]``); ``default_lane`` names a queue's default lane:
    ``queue`` (the SQS queue named as the workq queue, so plain clients interoperate) or
    ``suffixed`` (``<queue>_p0``, the layout of earlier versions); ``lane_refresh`` is
    how often (s) a consumer of every tenant looks for new lanes; ``lane_sweep`` is the
    longest (s) a lane with no news goes unpolled (the safety net behind the doorbell:
    see docs/backends/sqs.md); ``ack_linger`` is how long (s) an ack waits to share a
    ``DeleteMessageBatch`` with others.

    Examples:
        >>> SQSSettings.from_url("sqs://eu-west-1?queue_prefix=dev-").queue_prefix
        'dev-'
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqs",)
    backend: Literal["sqs"] = "sqs"
    #: AWS region (the URL's host); ``AWS_DEFAULT_REGION`` when unset.
    region: str | None = None
    #: An SQS-compatible endpoint (moto, LocalStack...); AWS when unset.
    endpoint_url: str | None = None
    #: Cap on a long poll in seconds; 0 turns long polling off.
    wait_time_seconds: int = Field(20, ge=0, le=20)
    #: Starts every SQS queue name workq makes (at most 20 of ``[A-Za-z0-9_-]``).
    queue_prefix: str = ""
    #: ``queue``: the default lane is the SQS queue named as the workq queue (plain
    #: clients interoperate); ``suffixed``: ``<queue>_p0``, the earlier layout.
    default_lane: Literal["queue", "suffixed"] = "queue"
    #: Seconds between look-ups for new lanes by a consumer of every tenant.
    lane_refresh: float = Field(1.0, gt=0)
    #: Longest time (s) a lane with no news goes unpolled, behind the doorbell.
    lane_sweep: float = Field(1200.0, ge=1.0)
    #: Seconds an ack waits to share a ``DeleteMessageBatch`` with others.
    ack_linger: float = Field(0.02, ge=0, le=1.0)
    #: Explicit credentials (else boto3's chain: environment, profile, role).
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        return {"region": url.netloc or None}

    def redacted_url(self) -> str:
        query = f"?endpoint_url={self.endpoint_url}" if self.endpoint_url else ""
        return f"sqs://{self.region or ''}{query}"
