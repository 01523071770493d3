"""The boto3 SQS client with workq's retry and error rules.

Throttling, 5xx answers and dropped connections are retried with tenacity (exponential
backoff with jitter, bounded by ``publish_retries`` and ``publish_timeout``); botocore's
own retries are turned off so the bounds hold. Anything else raises at once, naming the
SQS operation and the workq queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ...errors import BrokerUnavailable, ConfigurationError, WorkqError
from .settings import SQSSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["QueueMissing", "SQSCalls", "SQSError", "error_code"]

log = logging.getLogger("workq.sqs")

P = ParamSpec("P")
R = TypeVar("R")

RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "AWS.SimpleQueueService.RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "KmsThrottled",
    }
)
MISSING_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


class SQSError(WorkqError):
    """SQS refused a request that retrying cannot fix; the message names the queue."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class QueueMissing(SQSError):
    """An SQS queue workq expected is not there (deleted, or never created)."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def retryable(exc: BaseException) -> bool:
    """Throttling, server-side failures and connection trouble: worth another try."""
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES or _status(exc) >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


class SQSCalls:
    """A thread-safe boto3 SQS client whose calls retry and raise workq errors."""

    def __init__(self, settings: SQSSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint_url or "the AWS SQS endpoint"
        config = Config(
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=settings.connect_timeout,
            # A long poll lasts up to 20 s: the read timeout must outlast it.
            read_timeout=max(settings.publish_timeout, 25.0),
            max_pool_connections=64,
        )
        try:
            session = boto3.session.Session(region_name=settings.region)
            self.client: SQSClient = session.client(
                "sqs", endpoint_url=settings.endpoint_url, config=config
            )
        except NoRegionError:
            raise ConfigurationError(
                "no AWS region for SQS: put it in the URL (sqs://us-east-1) or set "
                "AWS_DEFAULT_REGION"
            ) from None
        except (ValueError, BotoCoreError) as exc:
            raise ConfigurationError(
                f"cannot make an SQS client for {settings.redacted_url()!r}: {exc}"
            ) from None

    def _stop(self, state: RetryCallState) -> bool:
        attempts = stop_after_attempt(self.settings.publish_retries + 1)
        delay = stop_after_delay(self.settings.publish_timeout)
        return bool(attempts(state) or delay(state))

    def call(self, queue: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one SQS request for ``queue`` (a workq or SQS name, for errors)."""
        op = getattr(fn, "__name__", "request")
        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=self._stop,
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
            before_sleep=lambda s: log.warning(
                "SQS %s on queue %r failed (%s); retrying",
                op,
                queue,
                s.outcome and s.outcome.exception(),
            ),
        )
        try:
            return retrying(fn, *args, **kwargs)
        except ClientError as exc:
            code = error_code(exc)
            msg = exc.response.get("Error", {}).get("Message", str(exc))
            if code in MISSING_CODES:
                raise QueueMissing(
                    f"SQS queue for {queue!r} does not exist ({op}): {msg}", code
                ) from exc
            if code in (
                "InvalidClientTokenId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "AccessDeniedException",
                "UnrecognizedClientException",
            ):
                raise ConfigurationError(
                    f"SQS {op} on queue {queue!r} was refused ({code}: {msg}): check the "
                    "AWS credentials and their permissions"
                ) from exc
            raise SQSError(f"SQS {op} on queue {queue!r} failed: {code}: {msg}", code) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigurationError(
                f"no usable AWS credentials for SQS ({exc}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role"
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise BrokerUnavailable(
                f"SQS at {self.endpoint} did not answer {op} for queue {queue!r} after "
                f"{self.settings.publish_retries} retries ({exc}): check endpoint_url and "
                "the region, and that the service is up"
            ) from exc

    def close(self) -> None:
        self.client.close()
