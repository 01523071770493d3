"""The conformance suite on a real RabbitMQ node, sync (pika) and async (aio-pika)."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance

pytestmark = pytest.mark.rabbitmq


class TestRabbitMQSync(Conformance):
    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return rabbitmq_url


class TestRabbitMQAsync(AsyncConformance):
    @pytest.fixture
    def url(self, rabbitmq_url: str) -> str:
        return rabbitmq_url
