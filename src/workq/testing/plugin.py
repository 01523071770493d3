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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def start_broker(name: str, workdir: Path) -> BrokerProcess:
    """Start a ``name`` broker (rabbitmq, sqs, kafka): a local process, else a container."""
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
    """An ``amqp://`` URL of a real RabbitMQ node for this test session."""
    yield from broker_url("rabbitmq", tmp_path_factory)


@pytest.fixture(scope="session")
def sqs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ``sqs://`` URL of a real SQS server for this test session."""
    yield from broker_url("sqs", tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``kafka://`` URL of a real Kafka-protocol broker for this test session."""
    yield from broker_url("kafka", tmp_path_factory)
