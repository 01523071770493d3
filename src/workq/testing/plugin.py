"""The workq pytest plugin: real-broker URL fixtures for a test session.

Each fixture resolves, in order: the URL in ``WORKQ_TEST_<NAME>_URL``; a broker process
started on a free loopback port; a testcontainers container. When none works the test is
skipped with the reasons, except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .brokers import BrokerProcess, NotAvailable, docker_engine_problem

__all__ = ["broker_url", "in_ci", "kafka_url", "rabbitmq_url", "sqs_url", "start_broker"]


def in_ci() -> bool:
    """Whether this runs in CI (``CI`` is ``1``, ``true`` or ``yes``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def start_broker(name: str, workdir: Path) -> BrokerProcess:
    """Start a ``name`` broker (rabbitmq, sqs, kafka): a local process, else a container.

    Args:
        name: The launcher module in ``workq.testing.brokers``: ``rabbitmq``, ``sqs``
            or ``kafka``.
        workdir: Directory for the local process's data and logs.

    Returns:
        The running broker; call its ``stop()`` when done.

    Raises:
        NotAvailable: Neither way works here; the message gives each way's reason.

    Example:
        ```python
        proc = start_broker("sqs", tmp_path)
        try:
            broker = workq.connect(proc.url)
        finally:
            proc.stop()
        ```
    """
    launcher = importlib.import_module(f"workq.testing.brokers.{name}")
    reasons = []
    for way in ("start_local", "start_container"):
        try:
            if way == "start_local":
                proc: BrokerProcess = launcher.start_local(workdir)
            else:
                # Asked first so the reason is plain, and no container start waits on an
                # engine that is not there.
                problem = docker_engine_problem()
                if problem:
                    raise NotAvailable(problem)
                proc = launcher.start_container()
            return proc
        except NotAvailable as exc:
            reasons.append(f"{way}: {exc}")
    raise NotAvailable(f"no {name} broker could be started; " + "; ".join(reasons))


def broker_url(name: str, factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a ``name`` broker for a session fixture; stops what it started.

    ``WORKQ_TEST_<NAME>_URL`` wins; else [start_broker][workq.testing.plugin.start_broker].
    When no broker can be had the test is skipped, or fails under ``CI=true``.
    """
    env = os.environ.get(f"WORKQ_TEST_{name.upper()}_URL")
    if env:
        yield env
        return
    try:
        proc = start_broker(name, factory.mktemp(f"{name}-broker"))
    except NotAvailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def rabbitmq_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ``amqp://`` URL of a real RabbitMQ node for this test session.

    ``WORKQ_TEST_RABBITMQ_URL`` if set; else an isolated node on free loopback ports
    (``rabbitmq-server`` installed with apt when missing, as root); else a
    ``rabbitmq:3.13`` container. Use a unique queue name per test.

    Example:
        ```python
        def test_roundtrip(rabbitmq_url: str) -> None:
            with workq.connect(rabbitmq_url) as broker:
                ...
        ```
    """
    yield from broker_url("rabbitmq", tmp_path_factory)


@pytest.fixture(scope="session")
def sqs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ``sqs://`` URL of a real SQS server for this test session.

    ``WORKQ_TEST_SQS_URL`` if set; else moto's server on a free loopback port (with dummy
    AWS credentials set unless some are configured); else a moto container.

    Example:
        ```python
        def test_roundtrip(sqs_url: str) -> None:
            with workq.connect(sqs_url) as broker:
                ...
        ```
    """
    yield from broker_url("sqs", tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``kafka://`` URL of a real Kafka-protocol broker for this test session.

    ``WORKQ_TEST_KAFKA_URL`` if set; else Apache Kafka in KRaft mode on free loopback
    ports (jars from Maven Central, cached), or Tansu with ``WORKQ_TEST_KAFKA=tansu``;
    else a Kafka container.

    Example:
        ```python
        def test_roundtrip(kafka_url: str) -> None:
            with workq.connect(kafka_url) as broker:
                ...
        ```
    """
    yield from broker_url("kafka", tmp_path_factory)
