"""The conformance suite on a real RabbitMQ node, sync (pika) and async (aio-pika)."""

from __future__ import annotations

import pika
import pytest

from workq.testing.conformance import FEATURES, AsyncConformance, Conformance, with_query

pytestmark = pytest.mark.rabbitmq

# queue.declare reports ready messages only; quorum queues count a release (channel
# close) as a delivery in x-delivery-count until issue 10's release bookkeeping lands.
RABBITMQ = FEATURES - {"in_flight_stats"}


class PlainAMQP:
    """The interop hook: another team's service declares its queue and sends with pika."""

    features = RABBITMQ | {"plain_producer"}

    def plain_publish(self, url: str, queue: str, body: bytes, headers: dict[str, str]) -> str:
        conn = pika.BlockingConnection(pika.URLParameters(url.split("?")[0]))
        try:
            ch = conn.channel()
            ch.queue_declare(queue, durable=True)
            mid = f"plain-{queue}"
            props = pika.BasicProperties(message_id=mid, headers=headers, delivery_mode=2)
            ch.basic_publish("", queue, body, props)
            return mid
        finally:
            conn.close()


class TestRabbitMQSync(PlainAMQP, Conformance):
    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return rabbitmq_url


class TestRabbitMQAsync(PlainAMQP, AsyncConformance):
    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return rabbitmq_url


# Classic queues order priorities natively within one tenant's queue only; across
# tenants the round-robin decides (docs/backends/rabbitmq.md).
CLASSIC = RABBITMQ - {"cross_tenant_priority"}


class TestRabbitMQClassicSync(Conformance):
    """Classic queues: native x-max-priority instead of priority lanes."""

    features = CLASSIC

    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return with_query(rabbitmq_url, "queue_type=classic")


class TestRabbitMQClassicAsync(AsyncConformance):
    """Classic queues through workq.aio."""

    features = CLASSIC

    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return with_query(rabbitmq_url, "queue_type=classic")
