"""``broker.queues()`` and ``workq queues`` on the real brokers: queue names only (no
lanes, dead-letter or helper queues), the sync and async twins alike; on RabbitMQ through
the management API, and a clear ``Unsupported`` where it is off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

import workq
from workq.cli import cli
from workq.testing.brokers import free_port
from workq.testing.conformance import unique, with_query

runner = CliRunner()


def fill(url: str) -> list[str]:
    """Make three queues (one declared, one with tenant and priority lanes, one with a
    dead letter); return their names, sorted."""
    declared, laned, dead = unique("decl"), unique("lane"), unique("dead")
    with workq.connect(url) as broker:
        broker.declare(declared, max_attempts=3)
        with broker.producer() as p:
            p.publish(laned, "x", tenant="acme", priority=5)
            p.publish(laned, "y")
            p.publish(dead, "z")
        with broker.consumer(dead) as c:
            d = c.get(timeout=30)
            assert d is not None
            d.reject("listing test")
    return sorted([declared, laned, dead])


def check_listing(url: str) -> None:
    """``url`` isolates this test's queues (a prefix): the listing is exactly them."""
    names = fill(url)
    with workq.connect(url) as broker:
        assert broker.queues() == names

    async def aio() -> list[str]:
        async with await workq.aio.connect(url) as broker:
            return await broker.queues()

    assert asyncio.run(aio()) == names
    result = runner.invoke(cli, ["queues", "--json", "--url", url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == names


@pytest.mark.sqs
def test_sqs_lists_queues_by_prefix(sqs_url: str) -> None:
    prefix = unique("p")[:12] + "-"
    url = with_query(sqs_url, f"queue_prefix={prefix}")
    check_listing(url)
    # A plain queue named like a dead-letter queue, without workq's tags, is no queue of
    # workq's; a queue name with underscores (escaped in SQS names) comes back as it was.
    with workq.connect(url) as broker:
        driver = broker.driver
        driver.sqs.client.create_queue(QueueName=f"{prefix}plain_dlq")  # type: ignore[attr-defined]
        broker.declare("my_queue")
        assert "plain" not in broker.queues()
        assert "my_queue" in broker.queues()


@pytest.mark.kafka
def test_kafka_lists_queues_from_topics(kafka_url: str) -> None:
    check_listing(with_query(kafka_url, f"topic_prefix={unique('p')}."))


@pytest.mark.kafka
def test_kafka_suffixed_names_list_the_same(kafka_url: str) -> None:
    check_listing(with_query(kafka_url, f"default_lane=suffixed&group_prefix={unique('g')}"))


@pytest.fixture(scope="module")
def managed_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A RabbitMQ node of its own with the management plugin on; its AMQP URL with
    ``management_url`` set."""
    from workq.testing.brokers import NotAvailable
    from workq.testing.brokers.rabbitmq import start_local
    from workq.testing.plugin import in_ci

    port = free_port()
    conf = f"management.tcp.port = {port}\nmanagement.tcp.ip = 127.0.0.1\n"
    try:
        proc = start_local(
            tmp_path_factory.mktemp("managed"), extra_conf=conf, plugins=("rabbitmq_management",)
        )
    except NotAvailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield with_query(proc.url, f"management_url=http://127.0.0.1:{port}")
    finally:
        proc.stop()


@pytest.mark.rabbitmq
def test_rabbitmq_lists_queues_through_the_management_api(managed_rabbitmq: str) -> None:
    check_listing(with_query(managed_rabbitmq, f"queue_prefix={unique('p')}."))
    classic = with_query(managed_rabbitmq, f"queue_prefix={unique('c')}.&queue_type=classic")
    check_listing(classic)


@pytest.mark.rabbitmq
def test_rabbitmq_without_the_management_api_says_why_and_what_to_do(rabbitmq_url: str) -> None:
    url = with_query(rabbitmq_url, f"management_url=http://127.0.0.1:{free_port()}")
    with (
        workq.connect(url) as broker,
        pytest.raises(workq.Unsupported, match="rabbitmq_management plugin") as info,
    ):
        broker.queues()
    assert "management_url" in str(info.value) and "AMQP" in str(info.value)
    result = runner.invoke(cli, ["queues", "--url", url])
    assert result.exit_code == 1
    assert "rabbitmq_management" in result.output and "guest" not in result.output


def test_a_management_url_with_credentials_is_refused_before_any_io() -> None:
    with pytest.raises(workq.ConfigurationError, match=r"management_url.*credentials"):
        workq.connect("amqp://h/?management_url=http://u:secret@h:15672")
    with pytest.raises(workq.ConfigurationError, match="management_url"):
        workq.connect("amqp://h/?management_url=ftp://h")
