"""Fixtures of the fault tests: one URL per backend, real brokers for the three servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from workq.testing.faults import FaultProxy

#: Every backend; the three servers come from the workq.testing plugin's fixtures.
BACKENDS = ["memory", "sqlite", "rabbitmq", "sqs", "kafka"]


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'workq.db'}"
    url: str = request.getfixturevalue(f"{backend}_url")
    return url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of each backend in turn."""
    return backend_url(request, request.param, tmp_path)


def _proxied(url: str, proxy_port: int) -> str:
    """``url`` with its broker's port replaced by the proxy's."""
    parts = urlsplit(url)
    if parts.scheme == "sqs":
        query = dict(parse_qsl(parts.query))
        endpoint = urlsplit(query["endpoint_url"])
        query["endpoint_url"] = endpoint._replace(netloc=f"127.0.0.1:{proxy_port}").geturl()
        return parts._replace(query=urlencode(query, safe=":/")).geturl()
    creds = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{creds}127.0.0.1:{proxy_port}").geturl()


def _upstream_port(url: str) -> int:
    parts = urlsplit(url)
    if parts.scheme == "sqs":
        port = urlsplit(dict(parse_qsl(parts.query))["endpoint_url"]).port
    else:
        port = urlsplit("//" + parts.netloc.rsplit("@", 1)[-1]).port
    assert port is not None
    return port


@pytest.fixture
def kafka_behind_proxy(tmp_path: Path) -> Iterator[tuple[str, FaultProxy]]:
    """A Tansu broker of its own that advertises a fault proxy's port, so that every
    connection the client makes (bootstrap and after) goes through the proxy."""
    from workq.testing.brokers import NotAvailable, free_port
    from workq.testing.brokers.kafka import start_tansu
    from workq.testing.plugin import in_ci

    port = free_port()
    with FaultProxy("127.0.0.1", port) as proxy:
        try:
            broker = start_tansu(tmp_path, port=port, advertised_port=proxy.port)
        except NotAvailable as exc:
            if in_ci():
                pytest.fail(f"CI=true and {exc}", pytrace=False)
            pytest.skip(str(exc))
        try:
            yield broker.url, proxy
        finally:
            broker.stop()


@pytest.fixture(params=["rabbitmq", "sqs", "kafka"])
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, FaultProxy]]:
    """(backend, URL through a fault proxy, the proxy) for each real broker."""
    backend = request.param
    if backend == "kafka":
        url, proxy = request.getfixturevalue("kafka_behind_proxy")
        yield backend, url, proxy
        return
    real: str = request.getfixturevalue(f"{backend}_url")
    with FaultProxy("127.0.0.1", _upstream_port(real)) as proxy:
        yield backend, _proxied(real, proxy.port), proxy
