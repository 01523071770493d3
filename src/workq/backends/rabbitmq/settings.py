"""Settings of the RabbitMQ backend (no client library imported here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import SecretStr, field_validator

from ...backend_settings import BackendSettings, parse_hosts

__all__ = ["RabbitMQSettings"]


class RabbitMQSettings(BackendSettings):
    """``amqp://user:pass@h1:5672,h2:5672/vhost``: a host list means failover; amqps for TLS."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps")
    backend: Literal["rabbitmq"] = "rabbitmq"
    #: ``host:port`` of each node (from the URL); more than one means failover, tried in order.
    hosts: list[str] = ["127.0.0.1:5672"]
    #: The user (the URL's user).
    username: str = "guest"
    #: The password (the URL's password); masked in ``repr``, logs and errors.
    password: SecretStr = SecretStr("guest")
    #: The virtual host (the URL's path).
    vhost: str = "/"
    #: Connect with TLS (true for ``amqps://``).
    tls: bool = False
    #: CA bundle to verify the nodes' certificates; the system's when unset.
    tls_ca_file: str | None = None
    #: Client certificate, for nodes that ask for one.
    tls_cert_file: str | None = None
    #: Key of the client certificate.
    tls_key_file: str | None = None
    #: Passphrase of an encrypted ``tls_key_file``.
    tls_key_password: SecretStr | None = None
    #: Verify the node's certificate and host name; turn off only for tests.
    tls_verify: bool = True
    #: AMQP heartbeat in seconds: how soon a silent connection is noticed dead.
    heartbeat: int = 60
    #: Type of the queues workq creates: ``quorum`` (replicated, the default) or
    #: ``classic`` (one node; native priorities).
    queue_type: Literal["quorum", "classic"] = "quorum"
    #: Prepended to the name of every queue and exchange workq makes; empty by default,
    #: so the default lane of queue ``orders`` is the RabbitMQ queue ``orders``.
    queue_prefix: str = ""
    #: Connection tries per call across the host list, all within ``connect_timeout``.
    reconnect_attempts: int = 5
    #: The management plugin's HTTP API (``http://host:15672``), used only to list
    #: queues (``workq queues``): AMQP cannot. Unset: port 15672 of the first host.
    management_url: str | None = None

    @field_validator("hosts")
    @classmethod
    def _some_hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("at least one host is needed")
        return hosts

    @field_validator("management_url")
    @classmethod
    def _plain_http_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http://HOST:PORT or https://HOST:PORT")
        if parts.username is not None or parts.password is not None:
            # The AMQP user's credentials are used; a URL's would show in reprs and logs.
            raise ValueError("must not hold credentials (the AMQP user's are used)")
        return url

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        tls = url.scheme == "amqps"
        user, password, hosts = parse_hosts(url.netloc, 5671 if tls else 5672)
        values: dict[str, Any] = {"tls": tls}
        if hosts:
            values["hosts"] = hosts
        if user:
            values["username"] = user
        if password is not None:
            values["password"] = password
        if url.path not in ("", "/"):
            values["vhost"] = unquote(url.path[1:])
        return values

    def redacted_url(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else self.vhost
        return f"{scheme}://{self.username}:***@{','.join(self.hosts)}/{vhost}"
