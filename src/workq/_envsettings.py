"""``workq.Settings`` itself, on pydantic-settings: loaded only when it is used (through
``workq.Settings``, ``workq.settings.Settings``, or ``connect()`` with no URL)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, SerializeAsAny
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backend_settings import BackendSettings, build, redact_url
from .errors import ConfigurationError
from .settings import parse_url

__all__ = ["AnyBackendSettings", "Settings"]


def _by_backend(value: Any) -> Any:
    """Backend settings given as a mapping (``WORKQ_BACKEND`` JSON, or a dict) validated
    into the class the registry names for its ``backend`` field."""
    if isinstance(value, BackendSettings) or value is None:
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a backend's settings object, or a mapping with a 'backend' key")
    name = value.get("backend")
    if not isinstance(name, str):
        raise ValueError("backend settings need a 'backend' key naming the backend")
    from .backends import by_name

    return build(by_name(name).settings_class(), value, source="backend settings")


#: Any backend's settings: an object, or a mapping whose ``backend`` names a backend in
#: the registry (``{"backend": "sqs", "region": "eu-west-1"}``), validated into its class.
AnyBackendSettings = Annotated[SerializeAsAny[BackendSettings], BeforeValidator(_by_backend)]


class Settings(BaseSettings):
    """workq's settings: a backend's typed settings, or a URL naming them.

    ``WORKQ_URL`` fills ``url``; ``WORKQ_BACKEND`` (JSON) fills ``backend``. Give one to
    ``workq.connect()``; the URL's password never shows in ``repr``.

    Attributes:
        url: A broker URL (``amqp://``, ``sqs://``, ``kafka://``, ``sqlite://``,
            ``memory://``, or a scheme an installed backend registers), kept secret.
        backend: A backend's settings object (``RabbitMQSettings``, ``SQSSettings``...),
            or a mapping discriminated by its ``backend`` field.

    Raises:
        ConfigurationError: From ``from_url()`` and ``resolve()``, for a URL of an unknown
            scheme, an unknown option or a bad value, naming what is wrong.

    Examples:
        >>> Settings.from_url("amqp://u:secret@h1,h2/jobs").resolve().hosts
        ['h1:5672', 'h2:5672']
        >>> Settings(url="amqp://u:secret@h1/jobs")
        Settings(url='amqp://u:***@h1/jobs')
        >>> Settings(backend={"backend": "memory", "name": "shared"}).resolve().name
        'shared'

        From the environment:

        ```python
        # WORKQ_URL=sqs://eu-west-1
        broker = workq.connect(workq.Settings())
        ```
    """

    # Inputs stay out of validation errors: a mapping given for ``backend`` may hold a
    # password, and the errors name the field and the problem without it.
    model_config = SettingsConfigDict(
        env_prefix="WORKQ_", extra="forbid", frozen=True, hide_input_in_errors=True
    )
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
