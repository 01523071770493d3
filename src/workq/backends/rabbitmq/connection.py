"""Connection setup shared by both drivers: TLS, hosts, bounds and their errors.

No client library is imported here, so the aio-pika driver and tools that only check
settings do not load pika.
"""

from __future__ import annotations

import ssl

from ...driver import Capabilities
from ...errors import BrokerUnavailable, ConfigurationError
from ...retrying import Deadline
from .settings import RabbitMQSettings

__all__ = [
    "CAPABILITIES",
    "CLOSE_TIMEOUT",
    "SYNC_TIMEOUT",
    "Deadline",
    "connect_failed",
    "endpoints",
    "lanes_bound",
    "not_confirmed",
    "tls_context",
]

CAPABILITIES = Capabilities(
    backend="rabbitmq",
    exchange_routing=True,
    lease_model="connection",
    max_body_size=128 * 1024 * 1024,
    # Under a second with room to spare: a new tenant's lane is found at the first
    # listing after it is made, then subscribed and pushed (0.05 s), so its first
    # message arrives within lane_refresh + that (at 1.0 it took 1.01 s at worst).
    lane_refresh=0.8,
    receive_batch=100,
)

#: How long to wait for the confirm of a registry record.
SYNC_TIMEOUT = 15.0
#: How long ``close()`` waits for the broker's goodbye before giving up on it (the
#: connection is dropped either way; a black-holed network never answers).
CLOSE_TIMEOUT = 3.0


def endpoints(settings: RabbitMQSettings) -> list[tuple[str, int]]:
    """``(host, port)`` of each host, in failover order."""
    out = []
    for item in settings.hosts:
        host, _, port = item.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def tls_context(settings: RabbitMQSettings) -> ssl.SSLContext:
    """The TLS context the settings describe (CA file, client certificate, verification)."""
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"TLS files for {settings.redacted_url()} cannot be loaded ({exc}); check "
            "tls_ca_file, tls_cert_file and tls_key_file"
        ) from exc
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def not_confirmed(settings: RabbitMQSettings, target: str, left: int, total: int, last: str) -> str:
    """The ``PublishError`` of messages still unconfirmed when the bounded retries end
    (``target``: "queue 'q'" or "exchange 'x' (routing key 'k')"); both drivers'."""
    return (
        f"{left} of {total} message(s) to {target} were not confirmed by RabbitMQ at "
        f"{settings.redacted_url()} within publish_timeout={settings.publish_timeout}s "
        f"(publish_retries={settings.publish_retries}; {last}); they may or may not be "
        "enqueued: publish them again"
    )


def lanes_bound(new_lanes: int) -> float:
    """How long a publish may spend declaring the lanes it reaches first: a quorum
    queue takes tens of milliseconds to make on a busy node, so this grows with them."""
    return SYNC_TIMEOUT * 3 + 0.2 * new_lanes


def connect_failed(
    settings: RabbitMQSettings, attempts: int, exc: BaseException
) -> BrokerUnavailable:
    """The error of a connect that failed within ``connect_timeout``."""
    return BrokerUnavailable(
        f"cannot connect to RabbitMQ at {settings.redacted_url()} within "
        f"connect_timeout={settings.connect_timeout}s ({attempts} attempt(s) over "
        f"{len(settings.hosts)} host(s)): {exc!r}. Check the broker is running and the URL "
        "(hosts, credentials, vhost) is right"
    )
