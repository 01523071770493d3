"""The conformance suite on kafka://, sync and async, against a real broker."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance, with_query

pytestmark = pytest.mark.kafka


class TestKafkaSync(Conformance):
    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url


class TestKafkaAsync(AsyncConformance):
    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url


@pytest.fixture
def share_url(kafka_url: str) -> str:
    """The same broker, queues consumed through share groups (KIP-932)."""
    return with_query(kafka_url, "mode=share&share_lock_timeout=5")


class TestKafkaShareSync(Conformance):
    @pytest.fixture
    def url(self, share_url: str) -> str:
        return share_url


class TestKafkaShareAsync(AsyncConformance):
    @pytest.fixture
    def url(self, share_url: str) -> str:
        return share_url
