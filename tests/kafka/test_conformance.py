"""The conformance suite on kafka://, sync and async, against a real broker."""

from __future__ import annotations

import pytest

from workq.testing.conformance import FEATURES, AsyncConformance, Conformance

pytestmark = pytest.mark.kafka

# stats() is end offsets minus the group's commits: an estimate, and no in-flight count.
KAFKA = FEATURES - {"exact_stats", "in_flight_stats"}


class TestKafkaSync(Conformance):
    features = KAFKA

    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url


class TestKafkaAsync(AsyncConformance):
    features = KAFKA

    @pytest.fixture
    def url(self, kafka_url: str) -> str:
        return kafka_url
