"""Real brokers for tests: each module here starts one kind on free loopback ports.

A launcher module provides ``start_local(workdir: Path) -> BrokerProcess`` (a process on
this machine) and ``start_container() -> BrokerProcess`` (testcontainers). Each raises
[NotAvailable][workq.testing.brokers.NotAvailable] saying why it cannot, so the plugin
can try the next way.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BrokerProcess", "NotAvailable", "docker_engine_problem", "free_port", "wait_port"]


class NotAvailable(RuntimeError):
    """This way of getting a broker does not work here; the message says why."""


@dataclass
class BrokerProcess:
    """A running broker: its URL, and how to stop it.

    Attributes:
        url: The workq URL of the broker (``amqp://...``, ``sqs://...``, ``kafka://...``).
        stop_fn: Stops the broker; called by ``stop()``.
        info: Details for tests and debugging (pid, log file, node objects...).
    """

    url: str
    stop_fn: Callable[[], None] = field(repr=False, default=lambda: None)
    info: dict[str, object] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the broker and free what it used."""
        self.stop_fn()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``host:port``, or raise TimeoutError.

    Args:
        port: The TCP port.
        timeout: Seconds to keep trying.
        host: The host to connect to.

    Raises:
        TimeoutError: Nothing accepted a connection within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def docker_engine_problem(timeout: float = 5.0) -> str | None:
    """Why no Docker engine can run containers here, or ``None`` when one answers.

    A ``docker`` command on the ``PATH`` is not enough: the engine behind it (the socket,
    or ``DOCKER_HOST``) must answer a ping within ``timeout`` seconds.

    Args:
        timeout: Seconds to wait for the engine's answer.

    Returns:
        ``None`` if a Docker engine answered, else the reason in one sentence.

    Example:
        ```python
        problem = docker_engine_problem()
        if problem:
            pytest.skip(f"no containers here: {problem}")
        ```
    """
    try:
        docker = importlib.import_module("docker")
    except ImportError:
        return (
            "the docker package is missing: it comes with the test extra, "
            "pip install 'pyworkq[test]'"
        )
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure to reach the engine means "not here"
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None
