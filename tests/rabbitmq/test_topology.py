"""The RabbitMQ mapping's pure parts: names, arguments, delay buckets, the registry."""

from __future__ import annotations

import pika
import pika.frame
import pika.spec
import pytest

from workq.backends.rabbitmq.driver import _ack_frame, _Entry, _header_payload
from workq.backends.rabbitmq.topology import (
    DELAY,
    Registry,
    Topology,
    delay_ms,
    delay_record,
    lane_record,
    outgoing_headers,
    received,
    spec_record,
)
from workq.errors import ConfigurationError
from workq.lanes import Lane
from workq.messages import Outgoing
from workq.spec import QueueSpec

pytestmark = pytest.mark.rabbitmq


def test_quorum_lanes_split_by_priority_classic_lanes_do_not() -> None:
    quorum = Topology.of(QueueSpec("q"), "quorum")
    classic = Topology.of(QueueSpec("q", options={"queue_type": "classic"}), "quorum")
    assert quorum.lane_queue(Lane("q", "acme", 5)) == "q.t.acme.p5"
    assert quorum.routing_key(Lane("q", "acme", 5)) == "acme.p5"
    assert classic.lane_queue(Lane("q", "acme", 5)) == "q.t.acme"
    assert classic.routing_key(Lane("q", None, 5)) == ""
    assert classic.lane_args()["x-max-priority"] == 9
    assert "x-max-priority" not in quorum.lane_args()


def test_delay_buckets_round_up() -> None:
    assert [delay_ms(d) for d in (0.0001, 0.05, 0.1234, 1.234, 59.99)] == [1, 50, 130, 1300, 60000]
    assert all(delay_ms(d) >= d * 1000 for d in (0.333, 2.5, 17.77))


def test_delay_binding_does_not_use_an_x_header() -> None:
    # A headers exchange ignores x- arguments, which would make every binding match.
    assert not DELAY.startswith("x-")
    assert Topology.delay_binding(200) == {"x-match": "all", DELAY: "200"}


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="partitions"):
        Topology.of(QueueSpec("q", options={"partitions": 3}), "quorum")


def test_registry_is_the_union_of_its_records() -> None:
    first = Registry("q")
    first.add(spec_record(QueueSpec("q", max_attempts=3), "quorum", implicit=False))
    first.add(lane_record(Lane("q", "a")))
    first.add(delay_record(1300))
    merged = Registry("q")
    merged.add(first.dump())
    merged.add(lane_record(Lane("q", "b", 2)))
    merged.add(b"not json")  # someone else's message: ignored
    assert merged.lanes == {Lane("q", "a"), Lane("q", "b", 2)}
    assert merged.explicit is not None and merged.explicit.max_attempts == 3
    assert merged.explicit.options == {"queue_type": "quorum"}
    assert merged.delays == {1300}
    assert merged.implicit is None


@pytest.mark.parametrize(
    "entry",
    [
        _Entry("x", "k", b"abc"),
        _Entry(
            "x",
            "k",
            b"a" * 300,
            True,
            {"content-type": "text/plain", "x-workq-enqueued-at": "1.5", "ü": "välue"},
            "ab" * 16,
            1_700_000_000,
        ),
        _Entry("x", "k", b"", True, {"a": "b"}, "id", 1, 7),
        _Entry("x", "k", b"zz", True, {"n": 1, "b": b"x"}, None, None, 0),
    ],
)
def test_content_header_is_encoded_as_pika_encodes_it(entry: _Entry) -> None:
    props = pika.BasicProperties(
        delivery_mode=2,
        headers=entry.headers,
        message_id=entry.message_id,
        timestamp=entry.timestamp,
        priority=entry.priority,
    )
    marshalled = pika.frame.Header(1, len(entry.body), props).marshal()
    assert _header_payload(entry) == marshalled[7:-1]  # without frame head and end


def test_metadata_headers_leave_out_what_reads_back_by_default() -> None:
    topo = Topology.of(QueueSpec("q"), "quorum")
    plain = Outgoing(Lane("q"), "abc", b"x", {"content-type": "text/plain"}, enqueued_at=5.25)
    headers = outgoing_headers(plain)
    assert headers == {"content-type": "text/plain", "x-workq-enqueued-at": "5.25"}
    back = received(
        topo,
        body=b"x",
        headers=headers,
        message_id="abc",
        priority=None,
        redelivered=False,
        timestamp=5,
        token=None,
    )
    assert (back.id, back.lane, back.attempt, back.enqueued_at) == ("abc", Lane("q"), 1, 5.25)
    assert back.headers == {"content-type": "text/plain"}
    other = Outgoing(Lane("q", "acme", 3), "abc", b"x", {}, attempt=4, enqueued_at=5.25)
    back = received(
        topo,
        body=b"x",
        headers=outgoing_headers(other, 1300),
        message_id="abc",
        priority=None,
        redelivered=False,
        timestamp=5,
        token=None,
    )
    assert (back.lane, back.attempt, back.headers) == (Lane("q", "acme", 3), 4, {})


def test_ack_frame_is_pikas_and_acks_one_tag() -> None:
    ack = pika.spec.Basic.Ack(delivery_tag=123_456_789, multiple=False)
    expected = pika.frame.Method(7, ack).marshal()
    assert _ack_frame(7, 123_456_789) == expected
