"""The base of every backend's settings, and URL parsing helpers they share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigurationError

__all__ = [
    "MASK",
    "BackendSettings",
    "build",
    "is_secret",
    "parse_hosts",
    "redact",
    "redact_url",
]

#: What a secret is shown as.
MASK = "***"

# The one redaction rule: a setting (or URL option) whose name says it is a secret. Every
# backend's secret fields are also SecretStr, and a test checks the two agree.
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|access_key|api_key|private_key", re.I
)


def is_secret(name: str) -> bool:
    """Whether a setting or URL option named ``name`` holds a secret.

    >>> is_secret("sasl_password"), is_secret("aws_secret_access_key"), is_secret("hosts")
    (True, True, False)
    """
    return bool(_SECRET_NAME.search(name))


def redact(value: Any, name: str = "") -> Any:
    """``value`` fit to show: masked if ``name`` is a secret's or it is a ``SecretStr``;
    mappings (a whole settings input) redacted key by key."""
    if isinstance(value, SecretStr) or (name and is_secret(name)):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    return value


S = TypeVar("S", bound=BaseModel)


class BackendSettings(BaseModel):
    """Settings every backend has. Each backend subclasses it with a ``backend`` literal.

    Values can come from a URL's query string: ``?publish_retries=3``.
    """

    # defer_build: this base is never validated itself, so its validator is not built at
    # import (memory and start-up time); each backend's class builds its own on first use.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    schemes: ClassVar[tuple[str, ...]] = ()

    backend: str
    #: Seconds to establish a connection (each attempt).
    connect_timeout: float = Field(10.0, gt=0, allow_inf_nan=False)
    #: Retries of a publish the broker did not confirm, within ``publish_timeout``.
    publish_retries: int = Field(5, ge=0)
    #: Seconds a publish may take in all, retries included.
    publish_timeout: float = Field(30.0, gt=0, allow_inf_nan=False)

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        """The fields named by the URL's scheme, host and path. Backends override this."""
        return {}

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Parse a URL of this backend, raising ``ConfigurationError`` on a bad one."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(f"URL {redact_url(url)!r} cannot be parsed: {exc}") from None
        if parts.scheme not in cls.schemes:
            raise ConfigurationError(
                f"URL {redact_url(url)!r} has scheme {parts.scheme!r}; "
                f"expected one of {', '.join(cls.schemes)}"
            )
        try:
            values = cls.url_fields(parts)
        except ValueError as exc:  # e.g. a bad port; the message names no secret
            raise ConfigurationError(f"URL {redact_url(url)!r}: {exc}") from None
        allowed = sorted(set(cls.model_fields) - {"backend"} - set(values))
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in allowed:
                raise ConfigurationError(
                    f"URL {redact_url(url)!r}: unknown option {key!r}; "
                    f"allowed options are: {', '.join(allowed)}"
                )
            values[key] = value
        return build(cls, values, source=redact_url(url))

    def redacted_url(self) -> str:
        """A URL for logs and errors, with secrets masked."""
        return f"{self.backend}://"


def build(cls: type[S], values: Mapping[str, Any], source: str = "") -> S:
    """Validate values into ``cls``; turn pydantic's error into a ``ConfigurationError``."""
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            shown = redact(err.get("input"), field)
            problems.append(f"{field}={shown!r}: {err['msg']}")
        where = f" in {source}" if source else ""
        raise ConfigurationError(f"invalid {cls.__name__}{where}: " + "; ".join(problems)) from None


def parse_hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[str]]:
    """Split ``user:pass@h1:1,h2:2`` into (user, password, ["h1:1", "h2:2"])."""
    user = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        user, _, pw = creds.partition(":")
        user = unquote(user) or None
        password = unquote(pw) if pw else None
    hosts = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if not host:
            host, port = item, ""
        if port and not port.isdigit():
            raise ConfigurationError(f"host {item!r}: port {port!r} is not a number")
        hosts.append(f"{host}:{port or default_port}")
    return user, password, hosts


def redact_url(url: str) -> str:
    """Mask secrets in a URL: the password, and options named as secrets.

    >>> redact_url("amqp://u:pw@h/v")
    'amqp://u:***@h/v'
    >>> redact_url("kafka://h:9092?sasl_password=pw&partitions=x")
    'kafka://h:9092?sasl_password=***&partitions=x'
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not even splittable: show only the scheme
        return url.split("://", 1)[0] + "://" + MASK if "://" in url else MASK
    netloc = parts.netloc
    if "@" in netloc:
        creds, hosts = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hosts}" if ":" in creds else f"{user}@{hosts}"
    query = parts.query
    if query:
        query = "&".join(
            f"{quote(k)}={MASK if is_secret(k) else quote(v, safe=':/,')}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        )
    return parts._replace(netloc=netloc, query=query).geturl()
