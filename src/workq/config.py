"""The base of every backend's settings, and URL parsing helpers they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigurationError

__all__ = ["BackendSettings", "build", "parse_hosts", "redact_url"]

S = TypeVar("S", bound=BaseModel)


class BackendSettings(BaseModel):
    """Settings every backend has. Each backend subclasses it with a ``backend`` literal.

    Values can come from a URL's query string: ``?publish_retries=3``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schemes: ClassVar[tuple[str, ...]] = ()

    backend: str
    connect_timeout: float = 10.0
    publish_retries: int = 5
    publish_timeout: float = 30.0

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        """The fields named by the URL's scheme, host and path. Backends override this."""
        return {}

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Parse a URL of this backend, raising ``ConfigurationError`` on a bad one."""
        parts = urlsplit(url)
        if parts.scheme not in cls.schemes:
            raise ConfigurationError(
                f"URL {redact_url(url)!r} has scheme {parts.scheme!r}; "
                f"expected one of {', '.join(cls.schemes)}"
            )
        values = cls.url_fields(parts)
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
            value = err.get("input")
            shown = "***" if any(s in field for s in ("password", "secret", "key")) else value
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
    """Mask a password in a URL: ``amqp://u:***@h/v``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    creds, hosts = parts.netloc.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    masked = f"{user}:***@{hosts}" if ":" in creds else f"{user}@{hosts}"
    return parts._replace(netloc=masked).geturl()
