"""The boto3 SQS client with workq's retry and error rules.

Throttling, 5xx answers and dropped connections are retried (``workq.retrying.REQUEST``:
exponential backoff with jitter, bounded by ``publish_retries`` and ``publish_timeout`` in
total);
botocore's own retries are turned off and its timeouts set so the bounds hold. Anything
else raises at once, naming the SQS operation and the workq queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

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
from pydantic import SecretStr

from ...errors import BrokerUnavailable, ConfigurationError, WorkqError
from ...retrying import REQUEST, Deadline, log_retry
from .settings import SQSSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["QueueMissing", "SQSCalls", "SQSError", "error_code", "retryable"]

log = logging.getLogger("workq.sqs")

P = ParamSpec("P")
R = TypeVar("R")

#: A long poll's read timeout is its wait plus this.
POLL_GRACE = 3.0
#: Connect timeout of long polls: a consumer must notice a dead endpoint promptly.
POLL_CONNECT_TIMEOUT = 3.0

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

    #: How many batches of a publish went out before the queue was found missing.
    sent = 0


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def retryable(exc: BaseException) -> bool:
    """Throttling, server-side failures and connection trouble: worth another try."""
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES or _status(exc) >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class SQSCalls:
    """Thread-safe boto3 SQS clients whose calls retry and raise workq errors.

    Every request has a bound that holds on a black-holed network: botocore's connect
    and read timeouts are set per client, and tenacity stops retrying when another try
    could overrun the call's budget (``publish_timeout`` unless said otherwise). A long
    poll needs a read timeout longer than its wait, so receives that wait go through a
    client made for that wait (``poller``); everything else through ``client``.
    ``requests`` counts every request sent, by operation (for benchmarks and tests).
    """

    def __init__(self, settings: SQSSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint_url or "the AWS SQS endpoint"
        self.requests: Counter[str] = Counter()
        budget = settings.publish_timeout
        # A quarter of the budget each for connecting and reading: one try takes at
        # most half of it, so a retry after a dropped connection still fits.
        self.connect_timeout = max(min(settings.connect_timeout, budget / 4), 0.1)
        self.read_timeout = max(min(10.0, budget / 4), 0.5)
        self._pollers: dict[int, SQSClient] = {}
        self._bounds: dict[int, float] = {}
        self._lock = threading.Lock()
        try:
            self._session = boto3.session.Session(
                region_name=settings.region,
                aws_access_key_id=_secret(settings.aws_access_key_id),
                aws_secret_access_key=_secret(settings.aws_secret_access_key),
                aws_session_token=_secret(settings.aws_session_token),
            )
            self._session.events.register("before-call.sqs", self._count)
            self.client: SQSClient = self._make(self.connect_timeout, self.read_timeout)
        except NoRegionError:
            raise ConfigurationError(
                "no AWS region for SQS: put it in the URL (sqs://us-east-1) or set "
                "AWS_DEFAULT_REGION"
            ) from None
        except (ValueError, BotoCoreError) as exc:
            raise ConfigurationError(
                f"cannot make an SQS client for {settings.redacted_url()!r}: {exc}"
            ) from None

    def _count(self, model: Any, **_: Any) -> None:
        self.requests[model.name] += 1

    def _make(self, connect_timeout: float, read_timeout: float) -> SQSClient:
        config = Config(
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=64,
        )
        client = self._session.client("sqs", endpoint_url=self.settings.endpoint_url, config=config)
        self._bounds[id(client)] = connect_timeout + read_timeout
        return client

    def bound(self, client: object) -> float:
        """The longest one request on ``client`` can take: connect plus read timeout."""
        return self._bounds.get(id(client), self.connect_timeout + self.read_timeout)

    def poller(self, wait: int) -> SQSClient:
        """The client for receives that long-poll ``wait`` seconds (read timeout wait + 3)."""
        if wait <= 0:
            return self.client
        with self._lock:
            client = self._pollers.get(wait)
            if client is None:
                client = self._pollers[wait] = self._make(
                    min(self.connect_timeout, POLL_CONNECT_TIMEOUT), wait + POLL_GRACE
                )
            return client

    def call(self, queue: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one SQS request for ``queue`` (a workq or SQS name, for errors) within
        ``publish_timeout``, retries included."""
        return self.call_within(self.settings.publish_timeout, queue, fn, *args, **kwargs)

    def call_within(
        self, budget: float, queue: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Like ``call``, retrying only while another try fits in ``budget`` seconds."""
        op = getattr(fn, "__name__", "request")
        started = time.monotonic()
        bound = self.bound(getattr(fn, "__self__", self.client))
        retrying = REQUEST.retrying(
            retryable,
            attempts=self.settings.publish_retries + 1,
            deadline=Deadline(budget),
            # The next try may take ``bound``, after a backoff of up to the cap.
            reserve=REQUEST.cap + bound,
            before_sleep=log_retry(log, f"SQS {op} on queue {queue!r}"),
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
                f"SQS at {self.endpoint} did not answer {op} for queue {queue!r} within "
                f"{time.monotonic() - started:.1f} s ({exc}): check endpoint_url and the "
                "region, and that the service is up"
            ) from exc

    def close(self) -> None:
        with self._lock:
            clients = [self.client, *self._pollers.values()]
        for client in clients:
            client.close()
