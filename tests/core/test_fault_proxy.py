"""The fault proxy used by the fault tests does what each mode says, on a plain echo server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from workq.testing.conformance import until
from workq.testing.faults import FaultProxy


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stopped = threading.Event()

    def serve(conn: socket.socket) -> None:
        # The proxy resets its upstream on purpose in drop mode.
        with conn, contextlib.suppress(ConnectionError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while not stopped.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stopped.set()
    thread.join()
    server.close()


def roundtrip(port: int, data: bytes = b"ping", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return sock.recv(4096)


def test_pass_forwards_both_ways(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        assert roundtrip(proxy.port) == b"ping"
        assert proxy.accepted == 1


def test_stall_holds_bytes_until_restored(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with sock:
            sock.sendall(b"a")
            assert sock.recv(16) == b"a"
            proxy.stall()
            sock.sendall(b"b")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(16)
            proxy.restore()
            sock.settimeout(5)
            assert sock.recv(16) == b"b"


def test_black_hole_accepts_and_never_answers(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        proxy.black_hole()
        with pytest.raises(TimeoutError):
            roundtrip(proxy.port, timeout=0.3)
        proxy.restore()
        assert roundtrip(proxy.port) == b"ping"


def test_drop_resets_open_and_new_connections(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with sock:
            sock.sendall(b"a")
            assert sock.recv(16) == b"a"
            proxy.drop()
            assert until(lambda: proxy.connections == 0, 5)
            with pytest.raises(OSError):
                sock.sendall(b"b")
                if not sock.recv(16):
                    raise ConnectionResetError("closed")
        with pytest.raises(OSError):
            data = roundtrip(proxy.port)
            if not data:
                raise ConnectionResetError("closed")
        proxy.restore()
        assert roundtrip(proxy.port) == b"ping"


def test_slow_delays_each_chunk(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        proxy.slow(0.5)
        with pytest.raises(TimeoutError):
            roundtrip(proxy.port, timeout=0.2)
        assert roundtrip(proxy.port, timeout=5) == b"ping"
        with pytest.raises(ValueError, match="delay"):
            proxy.slow(float("nan"))
