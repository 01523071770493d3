"""Health and metrics over HTTP: ``/livez``, ``/readyz`` and ``/metrics``.

``workq run APP --health-port N --metrics-port N`` serves them; code hosting workers
itself (say beside a web app) starts the same server with :func:`serve`:

>>> server = serve(8081, [worker])             # doctest: +SKIP
>>> server.close()                             # doctest: +SKIP

- ``/livez``: 200 while the process serves HTTP (the worker loop never dies of an outage).
- ``/readyz``: 200 while every watched worker (or app) is connected and consuming;
  503 during a reconnect, before the first connection and once a graceful stop began.
- ``/metrics``: the Prometheus text format of a ``prometheus_client`` registry (needs
  ``workq[prometheus]``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = ["HealthServer", "Watched", "ready", "serve"]

log = logging.getLogger("workq")


class Watched(Protocol):
    """Anything with a ``connected`` flag: ``Worker``, ``workq.aio.Worker``, ``App``."""

    @property
    def connected(self) -> bool: ...


def ready(targets: Iterable[Watched]) -> bool:
    """True when there is something to watch and all of it is connected."""
    items = list(targets)
    return bool(items) and all(t.connected for t in items)


class HealthServer:
    """An HTTP server on a thread of its own; ``close()`` stops it. ``port`` is the bound
    port (useful with port 0)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and free the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _metrics_payload(registry: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST


def serve(
    port: int,
    targets: Sequence[Watched] | Callable[[], Iterable[Watched]] = (),
    *,
    host: str = "0.0.0.0",
    health: bool = True,
    metrics: bool = True,
    registry: Any = None,
) -> HealthServer:
    """Serve ``/livez`` and ``/readyz`` (``health``) and ``/metrics`` (``metrics``).

    :param port: TCP port (0 picks a free one; see ``HealthServer.port``).
    :param targets: workers or apps whose ``connected`` flags make ``/readyz``, or a
        function returning them (for workers made later).
    :param registry: the ``prometheus_client`` registry ``/metrics`` serves (default:
        the global one).
    """
    if metrics:
        try:
            import prometheus_client  # noqa: F401
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "serving /metrics needs prometheus-client: pip install 'pyworkq[prometheus]'",
                name=exc.name,
            ) from exc

    def watched() -> list[Watched]:
        return list(targets() if callable(targets) else targets)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if health and path == "/livez":
                self._reply(200, b"ok\n")
            elif health and path == "/readyz":
                if ready(watched()):
                    self._reply(200, b"ready\n")
                else:
                    self._reply(503, b"not ready: not connected, reconnecting or stopping\n")
            elif metrics and path == "/metrics":
                body, content_type = _metrics_payload(registry)
                self._reply(200, body, content_type)
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health server: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"workq-http-{port}", daemon=True)
    thread.start()
    return HealthServer(server, thread)
