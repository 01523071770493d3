"""The conformance suite on kafka://, sync and async, against a real broker."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance

pytestmark = pytest.mark.kafka


class TestKafkaSync(Conformance):
    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url


class TestKafkaAsync(AsyncConformance):
    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url
