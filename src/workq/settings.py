"""``workq.Settings``: typed settings, discriminated by backend, filled from URLs or env.

Every backend, workq's own included, is found through the registry
(:mod:`workq.backends`): a URL's scheme names the backend, the backend names its settings
class, loaded on first use. So ``workq.connect("memory://")`` imports neither another
backend's settings nor pydantic-settings, which only :class:`Settings` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .backend_settings import BackendSettings, redact_url
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._envsettings import AnyBackendSettings, Settings
    from .backends.kafka.settings import KafkaSettings
    from .backends.memory.settings import MemorySettings
    from .backends.rabbitmq.settings import RabbitMQSettings
    from .backends.sqlite.settings import SqliteSettings
    from .backends.sqs.settings import SQSSettings

__all__ = [
    "AnyBackendSettings",
    "KafkaSettings",
    "MemorySettings",
    "RabbitMQSettings",
    "SQSSettings",
    "Settings",
    "SqliteSettings",
    "load",
    "parse_url",
]

# The built-in backends' settings classes, kept importable from here as before; each is
# the registry's (so the class a URL parses into is the very one named here).
_BUILTIN_SETTINGS = {
    "MemorySettings": "memory",
    "SqliteSettings": "sqlite",
    "RabbitMQSettings": "rabbitmq",
    "SQSSettings": "sqs",
    "KafkaSettings": "kafka",
}


def __getattr__(name: str) -> Any:
    if name in ("Settings", "AnyBackendSettings"):
        value: Any = getattr(importlib.import_module("._envsettings", __package__), name)
    elif name in _BUILTIN_SETTINGS:
        from .backends import by_name

        value = by_name(_BUILTIN_SETTINGS[name]).settings_class()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def parse_url(url: str) -> BackendSettings:
    """The backend settings a URL names; ``ConfigurationError`` if it names none.

    The scheme is looked up in the backend registry, built-in and installed backends
    alike.

    Example:
        >>> parse_url("memory://shared").backend
        'memory'
    """
    from .backends import by_scheme, schemes

    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"{redact_url(str(url))!r} is not a workq URL: expected scheme://..., with scheme "
            f"one of {', '.join(schemes())}"
        )
    scheme = url.split("://", 1)[0].lower()
    backend = by_scheme(scheme)
    if backend is None:
        raise ConfigurationError(
            f"unknown scheme {scheme!r} in URL {redact_url(url)!r}: "
            f"use one of {', '.join(schemes())}"
        )
    return backend.settings_class().from_url(url)


def load(target: Any = None, **overrides: Any) -> BackendSettings:
    """Whatever ``connect()`` was given (a URL, ``Settings``, backend settings or
    ``None`` for ``WORKQ_URL``), as backend settings."""
    if isinstance(target, str):
        settings = parse_url(target)
    elif isinstance(target, BackendSettings):
        settings = target
    else:
        # Only here is pydantic-settings needed: a URL or typed settings never load it.
        from ._envsettings import Settings

        if target is None:
            settings = Settings().resolve()
        elif isinstance(target, Settings):
            settings = target.resolve()
        else:
            raise ConfigurationError(
                "connect() takes a URL, workq.Settings or backend settings, "
                f"not {type(target).__name__}"
            )
    if overrides:
        from .backend_settings import build

        settings = build(type(settings), {**settings.model_dump(), **overrides})
    return settings
