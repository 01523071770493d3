"""How messages map onto AMQP and back, and the one routing rule of both drivers."""

from __future__ import annotations

import pytest

from workq.backends.rabbitmq.codec import outgoing_headers, received
from workq.backends.rabbitmq.topology import Topology
from workq.lanes import Lane
from workq.messages import Outgoing
from workq.spec import QueueSpec

pytestmark = pytest.mark.rabbitmq


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
