"""``workq.Settings``: typed settings, discriminated by backend, filled from URLs or env."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backends.kafka.settings import KafkaSettings
from .backends.memory.settings import MemorySettings
from .backends.rabbitmq.settings import RabbitMQSettings
from .backends.sqlite.settings import SqliteSettings
from .backends.sqs.settings import SQSSettings
from .config import BackendSettings, redact_url
from .errors import ConfigurationError

__all__ = [
    "AnyBackendSettings",
    "KafkaSettings",
    "MemorySettings",
    "RabbitMQSettings",
    "SQSSettings",
    "Settings",
    "SqliteSettings",
]

AnyBackendSettings = Annotated[
    MemorySettings | SqliteSettings | RabbitMQSettings | SQSSettings | KafkaSettings,
    Field(discriminator="backend"),
]

_BY_SCHEME: dict[str, type[BackendSettings]] = {
    scheme: cls
    for cls in (MemorySettings, SqliteSettings, RabbitMQSettings, SQSSettings, KafkaSettings)
    for scheme in cls.schemes
}


def parse_url(url: str) -> BackendSettings:
    """The backend settings a URL names; ``ConfigurationError`` if it names none."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"{redact_url(str(url))!r} is not a workq URL: expected scheme://..., with scheme "
            f"one of {', '.join(sorted(_BY_SCHEME))}"
        )
    scheme = url.split("://", 1)[0].lower()
    cls = _BY_SCHEME.get(scheme)
    if cls is None:
        # A backend registered from outside workq (the ``workq.backends`` entry points).
        from .backends import by_scheme, schemes

        backend = by_scheme(scheme)
        if backend is None:
            raise ConfigurationError(
                f"unknown scheme {scheme!r} in URL {redact_url(url)!r}: "
                f"use one of {', '.join(sorted(set(_BY_SCHEME) | set(schemes())))}"
            )
        cls = backend.settings_class()
    return cls.from_url(url)


class Settings(BaseSettings):
    """workq's settings: a backend's typed settings, or a URL naming them.

    ``WORKQ_URL`` fills ``url``; ``WORKQ_BACKEND`` (JSON) fills ``backend``. Give one to
    ``workq.connect()``; the URL's password never shows in ``repr``.

    Attributes:
        url: A broker URL (``amqp://``, ``sqs://``, ``kafka://``, ``sqlite://``,
            ``memory://``), kept secret.
        backend: A backend's settings object (``RabbitMQSettings``, ``SQSSettings``...),
            discriminated by its ``backend`` field.

    Raises:
        ConfigurationError: From ``from_url()`` and ``resolve()``, for a URL of an unknown
            scheme, an unknown option or a bad value, naming what is wrong.

    Examples:
        >>> Settings.from_url("amqp://u:secret@h1,h2/jobs").resolve().hosts
        ['h1:5672', 'h2:5672']
        >>> Settings(url="amqp://u:secret@h1/jobs")
        Settings(url='amqp://u:***@h1/jobs')

        From the environment:

        ```python
        # WORKQ_URL=sqs://eu-west-1
        broker = workq.connect(workq.Settings())
        ```
    """

    model_config = SettingsConfigDict(env_prefix="WORKQ_", extra="forbid", frozen=True)
    url: SecretStr | None = None
    backend: AnyBackendSettings | None = None

    @classmethod
    def from_url(cls, url: str) -> Settings:
        """Settings for a URL, parsed and checked now."""
        return cls(backend=parse_url(url))

    def resolve(self) -> BackendSettings:
        """The backend settings these name; ``ConfigurationError`` if none are given."""
        if self.backend is not None:
            return self.backend
        if self.url is not None:
            return parse_url(self.url.get_secret_value())
        raise ConfigurationError(
            "no broker URL: pass one to workq.connect(), or set WORKQ_URL "
            "(for example WORKQ_URL=sqlite:///tmp/workq.db)"
        )

    def __repr__(self) -> str:
        if self.backend is not None:
            return f"Settings(backend={self.backend!r})"
        if self.url is not None:
            return f"Settings(url={redact_url(self.url.get_secret_value())!r})"
        return "Settings()"

    __str__ = __repr__


def load(
    target: str | Settings | BackendSettings | None = None, **overrides: Any
) -> BackendSettings:
    """Whatever ``connect()`` was given, as backend settings."""
    if target is None:
        settings = Settings().resolve()
    elif isinstance(target, str):
        settings = parse_url(target)
    elif isinstance(target, Settings):
        settings = target.resolve()
    elif isinstance(target, BackendSettings):
        settings = target
    else:
        raise ConfigurationError(
            "connect() takes a URL, workq.Settings or backend settings, "
            f"not {type(target).__name__}"
        )
    if overrides:
        from .config import build

        settings = build(type(settings), {**settings.model_dump(), **overrides})
    return settings
