"""The conformance suite on SQS (a moto server), sync and async."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance

pytestmark = pytest.mark.sqs


class TestSQSSync(Conformance):
    @pytest.fixture
    def url(self, sqs_url: str) -> str:
        return sqs_url


class TestSQSAsync(AsyncConformance):
    @pytest.fixture
    def url(self, sqs_url: str) -> str:
        return sqs_url
