"""The conformance suite on SQS (a moto server), sync and async."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from workq.testing.conformance import FEATURES, AsyncConformance, Conformance

pytestmark = pytest.mark.sqs


class PlainSQS:
    """The interop hook: another team's service makes its queue and sends with boto3."""

    features = FEATURES | {"plain_producer"}

    def plain_publish(self, url: str, queue: str, body: bytes, headers: dict[str, str]) -> str:
        endpoint = parse_qs(urlsplit(url).query)["endpoint_url"][0]
        sqs = boto3.client("sqs", endpoint_url=endpoint)
        queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        attributes = {k: {"DataType": "String", "StringValue": v} for k, v in headers.items()}
        sent = sqs.send_message(
            QueueUrl=queue_url, MessageBody=body.decode(), MessageAttributes=attributes
        )
        return str(sent["MessageId"])


class TestSQSSync(PlainSQS, Conformance):
    @pytest.fixture
    def url(self, sqs_url: str) -> str:
        return sqs_url


class TestSQSAsync(PlainSQS, AsyncConformance):
    @pytest.fixture
    def url(self, sqs_url: str) -> str:
        return sqs_url
