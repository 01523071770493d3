"""The frames workq writes on pika's private API are byte for byte pika's own."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import pika
import pika.channel
import pika.frame
import pika.spec
import pytest

from workq.backends.rabbitmq.codec import Envelope
from workq.backends.rabbitmq.frames import ack_frame, deliveries, header_payload

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


class _Impl:
    """What ``deliveries`` reads of pika's connection: channels and counters."""

    def __init__(self, consumers: dict[str, object], cancelled: Iterable[str] = ()) -> None:
        channel = SimpleNamespace(
            _content_assembler=pika.channel.ContentFrameAssembler(),
            _consumers=consumers,
            _cancelled=set(cancelled),
        )
        self._channels = {1: channel}
        self.frames_received = 0
        self.bytes_received = 0


def _delivery(
    tag: str, delivery_tag: int, body: bytes, props: pika.BasicProperties, channel: int = 1
) -> bytes:
    deliver = pika.spec.Basic.Deliver(tag, delivery_tag, delivery_tag % 2 == 0, "ex", "rk")
    frames = [
        pika.frame.Method(channel, deliver).marshal(),
        pika.frame.Header(channel, len(body), props).marshal(),
    ]
    # Bodies longer than a frame come in several body frames.
    frames += [
        pika.frame.Body(channel, body[i : i + 100]).marshal() for i in range(0, len(body), 100)
    ]
    return b"".join(frames)


def test_deliveries_are_decoded_as_pika_decodes_them() -> None:
    got: list[tuple[object, ...]] = []
    impl = _Impl({"t": lambda ch, method, props, body: got.append((method, props, body))})
    props = [
        pika.BasicProperties(delivery_mode=2, headers={"x-workq-attempt": "2", "ü": "v"}),
        pika.BasicProperties(priority=7, message_id="m", timestamp=5, content_type="text/plain"),
        pika.BasicProperties(),
    ]
    bodies = [b"abc", b"x" * 250, b""]
    data = b"".join(_delivery("t", i + 1, bodies[i], props[i]) for i in range(3))
    assert deliveries(impl, data) == len(data)
    assert impl.bytes_received == len(data)
    assert impl.frames_received == 3 + 2 + 3 + 2  # method and header each, bodies 1 + 3 + 0
    # What pika itself decodes from the same bytes.
    expected = []
    at = 0
    while at < len(data):
        used, frame = pika.frame.decode_frame(data[at:])
        at += used
        if isinstance(frame, pika.frame.Method):
            method = frame.method
        elif isinstance(frame, pika.frame.Header):
            header, parts = frame, []
            if frame.body_size == 0:
                expected.append((method, header.properties, b""))
        else:
            parts.append(frame.fragment)
            if sum(map(len, parts)) == header.body_size:
                expected.append((method, header.properties, b"".join(parts)))
    assert len(got) == len(expected) == 3
    for (m, p, b), (em, ep, eb) in zip(got, expected, strict=True):
        assert vars(m) == vars(em) and vars(p) == vars(ep) and b == eb


def test_deliveries_stop_where_pika_must_read() -> None:
    got: list[bytes] = []
    impl = _Impl({"t": lambda ch, m, p, body: got.append(body)}, cancelled={"c"})
    props = pika.BasicProperties()
    one = _delivery("t", 1, b"one", props)
    # Cut short: nothing is taken, pika keeps the bytes.
    assert deliveries(impl, one[:-1]) == 0
    # A whole delivery, then one cut short: only the first.
    assert deliveries(impl, one + one[:-3]) == len(one)
    # Then a frame that is not a delivery (a heartbeat), a cancelled or unknown
    # consumer, another channel: pika reads from there.
    heartbeat = pika.frame.Heartbeat().marshal()
    for rest in (
        heartbeat,
        _delivery("c", 2, b"x", props),
        _delivery("unknown", 2, b"x", props),
        _delivery("t", 2, b"x", props, channel=2),
    ):
        assert deliveries(impl, one + rest) == len(one)
    assert got == [b"one"] * 5
