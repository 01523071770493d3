"""A TCP proxy that misbehaves on demand, for fault tests against real brokers.

Put it between a client and a broker, point the client at ``proxy.port``, and switch
modes while the test runs::

    with FaultProxy("127.0.0.1", broker_port) as proxy:
        broker = workq.connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        proxy.black_hole()      # the network goes silent: calls must fail within bounds
        ...
        proxy.restore()         # traffic flows again: the next call must recover

Modes:

- ``pass`` (default): bytes flow both ways.
- ``stall``: established connections stop moving bytes (held in the kernel's buffers and
  delivered on ``restore()``); new connections are accepted and stall as well. A
  congested or paused network.
- ``black_hole``: every byte is read and thrown away, both ways, and new connections are
  accepted but never reach the broker: the peer looks alive at the TCP level and never
  answers (a half-dead load balancer, a silently dropped route). Bytes swallowed are
  gone, so a connection that lived through it is broken: the client must reconnect.
- ``drop``: every connection is reset at once and new ones are reset on accept (a broker
  process that died, a firewall that rejects).
- ``slow``: each chunk is forwarded after ``delay`` seconds.

Kafka clients reconnect to the address the broker advertises, so a Kafka broker behind
this proxy must advertise the proxy's port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "stall", "black_hole", "drop", "slow"]

_CHUNK = 65536
# How often a pump looks at the mode while idle: bounds how late a mode change is seen.
_TICK = 0.05


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN, as a dying peer or a rejecting firewall does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and, unless black-holed from the start, its upstream."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()


class FaultProxy:
    """A TCP proxy from ``host:port`` (a free port by default) to ``upstream``.

    Args:
        upstream_host: the broker's host.
        upstream_port: the broker's port.
        host: the address to listen on (loopback by default).
        port: the port to listen on; 0 picks a free one (read it from ``.port``).

    Example:
        ```python
        with FaultProxy("127.0.0.1", 5672) as proxy:
            url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
            proxy.drop()
            proxy.restore()
        ```
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self._listener.settimeout(_TICK)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start accepting connections (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (idempotent)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_links(reset=False)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        up_host, up_port = self.upstream
        return f"FaultProxy({self.host}:{self.port} -> {up_host}:{up_port}, {self.mode})"

    # -- modes -----------------------------------------------------------------------

    def restore(self) -> None:
        """Let bytes flow again; stalled bytes are delivered."""
        self.mode = "pass"
        self.delay = 0.0

    def stall(self) -> None:
        """Stop moving bytes on every connection, keeping them open."""
        self.mode = "stall"

    def black_hole(self) -> None:
        """Swallow every byte both ways; new connections are accepted and never answered."""
        self.mode = "black_hole"

    def drop(self) -> None:
        """Reset every connection now, and every new one on accept."""
        self.mode = "drop"
        self._close_links(reset=True)

    def slow(self, delay: float) -> None:
        """Forward each chunk after ``delay`` seconds."""
        if not delay >= 0:
            raise ValueError(f"delay={delay!r} must be a number of seconds >= 0")
        self.delay = delay
        self.mode = "slow"

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        with self._lock:
            return sum(1 for link in self._links if not link.closed.is_set())

    # -- internals -------------------------------------------------------------------

    def _close_links(self, reset: bool) -> None:
        with self._lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            link.close(reset=reset)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "drop":
                _reset(client)
                continue
            upstream: socket.socket | None = None
            if self.mode != "black_hole":
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    _reset(client)
                    continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            if upstream is None:
                threading.Thread(target=self._swallow, args=(link,), daemon=True).start()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(link, src, dst), daemon=True).start()

    def _swallow(self, link: _Link) -> None:
        # A connection made while black-holed never reaches the broker, even if the mode
        # changes later: like a SYN that reached a dead end, the client must give up on it.
        while not link.closed.is_set() and not self._stopped.is_set():
            try:
                ready, _, _ = select.select([link.client], [], [], _TICK)
                if ready and not link.client.recv(_CHUNK):
                    break
            except (OSError, ValueError):
                break
        link.close()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        while not link.closed.is_set() and not self._stopped.is_set():
            mode = self.mode
            if mode == "stall":
                time.sleep(_TICK)
                continue
            try:
                ready, _, _ = select.select([src], [], [], _TICK)
                if not ready:
                    continue
                data = src.recv(_CHUNK)
            except (OSError, ValueError):
                break
            if not data:
                break
            mode = self.mode
            if mode == "black_hole":
                continue
            if mode == "slow" and self.delay:
                time.sleep(self.delay)
            while mode == "stall" and not link.closed.is_set():
                # Stalled mid-chunk: hold it until traffic flows again.
                time.sleep(_TICK)
                mode = self.mode
            try:
                dst.sendall(data)
            except OSError:
                break
        link.close()
        with self._lock:
            self._links.discard(link)
