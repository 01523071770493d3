"""The frames workq writes on pika's private API are byte for byte pika's own."""

from __future__ import annotations

import pika
import pika.frame
import pika.spec
import pytest

from workq.backends.rabbitmq.codec import Envelope
from workq.backends.rabbitmq.frames import ack_frame, header_payload

pytestmark = pytest.mark.rabbitmq


@pytest.mark.parametrize(
    "entry",
    [
        Envelope("x", "k", b"abc"),
        Envelope(
            "x",
            "k",
            b"a" * 300,
            True,
            {"content-type": "text/plain", "x-workq-enqueued-at": "1.5", "ü": "välue"},
            "ab" * 16,
            1_700_000_000,
        ),
        Envelope("x", "k", b"", True, {"a": "b"}, "id", 1, 7),
        Envelope("x", "k", b"zz", True, {"n": 1, "b": b"x"}, None, None, 0),
        Envelope("x", "k", b"{}", True, {"a": "b"}, "id", 5, None, "application/json"),
        Envelope("x", "k", b"", True, None, None, None, None, "text/plain; charset=utf-8"),
    ],
)
def test_content_header_is_encoded_as_pika_encodes_it(entry: Envelope) -> None:
    props = pika.BasicProperties(
        delivery_mode=2,
        headers=entry.headers,
        message_id=entry.message_id,
        timestamp=entry.timestamp,
        priority=entry.priority,
        content_type=entry.content_type,
    )
    marshalled = pika.frame.Header(1, len(entry.body), props).marshal()
    assert header_payload(entry) == marshalled[7:-1]  # without frame head and end


def testack_frame_is_pikas_and_acks_one_tag() -> None:
    ack = pika.spec.Basic.Ack(delivery_tag=123_456_789, multiple=False)
    expected = pika.frame.Method(7, ack).marshal()
    assert ack_frame(7, 123_456_789) == expected
