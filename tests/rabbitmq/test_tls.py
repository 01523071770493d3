"""amqps:// against a real node with a TLS listener and a certificate made for the test."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from workq.testing.brokers import free_port
from workq.testing.brokers.rabbitmq import start_local
from workq.testing.conformance import unique

pytestmark = pytest.mark.rabbitmq

WAIT = 30.0


def make_certificates(d: Path) -> None:
    """A test CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=workq CA",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")  # fmt: skip
    for name in ("server.key", "server.pem", "ca.pem"):
        (d / name).chmod(0o644)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A node with a TLS listener: (amqps URL without CA option, CA file)."""
    d = tmp_path_factory.mktemp("tls")
    make_certificates(d)
    port = free_port()
    conf = (
        f"listeners.ssl.1 = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {d / 'ca.pem'}\n"
        f"ssl_options.certfile = {d / 'server.pem'}\n"
        f"ssl_options.keyfile = {d / 'server.key'}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    proc = start_local(d / "node", extra_conf=conf)
    try:
        yield f"amqps://guest:guest@127.0.0.1:{port}/", d / "ca.pem"
    finally:
        proc.stop()


def test_amqps_publish_and_consume_sync_and_aio(tls_node: tuple[str, Path]) -> None:
    base, ca = tls_node
    url = f"{base}?tls_ca_file={ca}"
    q = unique()
    with workq.connect(url) as broker:
        broker.producer().publish(q, "over tls")
        with broker.consumer(q) as c:
            d = c.get(timeout=WAIT)
            assert d is not None and d.text() == "over tls"
            d.ack()

    async def aio() -> None:
        async with await workq.aio.connect(url) as broker:
            async with broker.producer() as p:
                await p.publish(q, "over tls, async")
            async with broker.consumer(q) as c:
                d = await c.get(timeout=WAIT)
                assert d is not None and d.text() == "over tls, async"
                await d.ack()

    asyncio.run(aio())


def test_amqps_with_an_unknown_ca_is_refused_clearly(tls_node: tuple[str, Path]) -> None:
    base, _ = tls_node
    # The system trust store does not know the test CA: the handshake must fail, and
    # the error must say where and why, not hang or connect unverified.
    with pytest.raises(workq.BrokerUnavailable, match=r"127\.0\.0\.1") as info:
        workq.connect(f"{base}?connect_timeout=3")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value)
