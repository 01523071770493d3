"""Real brokers for tests: each module here starts one kind on free loopback ports.

A launcher module provides ``start_local(workdir: Path) -> BrokerProcess`` (a process on
this machine) and ``start_container() -> BrokerProcess`` (testcontainers). Each raises
:class:`NotAvailable` saying why it cannot, so the plugin can try the next way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class NotAvailable(RuntimeError):
    """This way of getting a broker does not work here; the message says why."""


@dataclass
class BrokerProcess:
    """A running broker: its URL, and how to stop it."""

    url: str
    stop_fn: Callable[[], None] = field(repr=False, default=lambda: None)
    info: dict[str, object] = field(default_factory=dict)

    def stop(self) -> None:
        self.stop_fn()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``host:port``, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
