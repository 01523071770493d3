"""Listing workq's queues on RabbitMQ through the management HTTP API (stdlib only).

AMQP 0-9-1 has no call that lists queues, so ``Driver.queues`` asks the management
plugin's HTTP API when it is on: ``management_url`` if set, else port 15672 of the first
host, with the AMQP user's credentials. A workq queue ``q`` is recognised by the objects
every declaration makes (``topology.py``): its registry queue ``q.meta`` and its exchange
``workq.q`` (both after ``queue_prefix``). Neither client library is needed, so the
pika and aio-pika drivers share this.
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

from ...errors import BrokerUnavailable, ConfigurationError, Unsupported
from ...names import NAME_PATTERN
from .settings import RabbitMQSettings
from .topology import Topology

__all__ = ["api_url", "list_queues", "workq_queues"]

#: The management plugin's default HTTP port.
PORT = 15672


def api_url(settings: RabbitMQSettings) -> str:
    """Where the management API is asked: ``management_url``, else the first host's
    port 15672 over HTTP.

    >>> api_url(RabbitMQSettings(hosts=["rabbit1:5672", "rabbit2:5672"]))
    'http://rabbit1:15672'
    """
    if settings.management_url:
        return settings.management_url.rstrip("/")
    host = settings.hosts[0].rsplit(":", 1)[0]
    return f"http://{host}:{PORT}"


def workq_queues(prefix: str, queues: set[str], exchanges: set[str]) -> list[str]:
    """The workq queues among a vhost's queue and exchange names: ``q`` where both
    ``<prefix>q.meta`` and ``workq.<prefix>q`` exist.

    >>> workq_queues("", {"jobs", "jobs.meta", "jobs.dlq", "x.meta"}, {"workq.jobs"})
    ['jobs']
    """
    found = []
    for name in queues:
        if not name.startswith(prefix) or not name.endswith(".meta"):
            continue
        queue = name[len(prefix) : -len(".meta")]
        if NAME_PATTERN.fullmatch(queue) and Topology(queue, "quorum", 0, prefix).exchange in (
            exchanges
        ):
            found.append(queue)
    return sorted(found)


def _get(settings: RabbitMQSettings, base: str, path: str) -> Any:
    # Here, not at the top: urllib.request brings http.client and the email package,
    # which every worker and producer would carry for a call only `workq queues` makes.
    import urllib.error
    import urllib.request

    url = f"{base}{path}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    # The AMQP user's credentials (management_url never carries any: see its check).
    user, password = settings.username, settings.password.get_secret_value()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    context = None
    if urlsplit(url).scheme == "https":
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        if not settings.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    shown = base
    try:
        with urllib.request.urlopen(
            request, timeout=settings.connect_timeout, context=context
        ) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ConfigurationError(
                f"the RabbitMQ management API at {shown} refused user {settings.username!r} "
                f"(HTTP {exc.code}): give the user the 'monitoring' or 'management' tag, "
                "or set management_url to an API this user may read"
            ) from None
        raise BrokerUnavailable(
            f"the RabbitMQ management API at {shown} answered HTTP {exc.code} to {path}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unsupported(
            "rabbitmq",
            f"listing queues over AMQP, which has no such call; workq asks the management "
            f"API instead, and none answered at {shown} ({reason}): enable the "
            "rabbitmq_management plugin, or give its address with "
            "management_url=http://HOST:15672",
        ) from None


def list_queues(settings: RabbitMQSettings) -> list[str]:
    """The workq queues in the settings' vhost, from the management API (blocking).

    Raises:
        Unsupported: No management API answers (the plugin is off, or elsewhere).
        ConfigurationError: It refuses the user.
        BrokerUnavailable: It answers with an error.
    """
    base = api_url(settings)
    vhost = quote(settings.vhost, safe="")
    queues = _get(settings, base, f"/api/queues/{vhost}?columns=name")
    exchanges = _get(settings, base, f"/api/exchanges/{vhost}?columns=name")
    return workq_queues(
        settings.queue_prefix,
        {q["name"] for q in queues},
        {e["name"] for e in exchanges},
    )
