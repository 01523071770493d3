"""How messages map onto AMQP and back, and the one routing rule of both drivers."""

from __future__ import annotations

import pytest

from workq.backends.rabbitmq.codec import envelope, outgoing_headers, received
from workq.backends.rabbitmq.topology import Topology
from workq.driver import Outgoing, Received
from workq.lanes import Lane
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


def test_one_routing_rule_for_publish_delay_and_dead_letter() -> None:
    topo = Topology.of(QueueSpec("q", max_priority=5), "quorum")
    msg = Outgoing(Lane("q", "acme", 2), "id1", b"x", {"content-type": "text/plain"})
    plain = envelope(topo, msg)
    assert (plain.exchange, plain.routing_key, plain.mandatory) == ("workq.q", "acme.p2", True)
    assert plain.content_type == "text/plain" and "content-type" not in (plain.headers or {})
    assert plain.priority == 2 and plain.message_id == "id1"
    msg.delay = 1.5
    delayed = envelope(topo, msg)
    assert (delayed.exchange, delayed.routing_key) == ("workq.q.delay", "acme.p2")
    dead = envelope(topo, msg, dead="bad")
    assert (dead.exchange, dead.routing_key, dead.mandatory) == ("workq.q.dlx", "acme.p2", True)
    assert (dead.headers or {})["x-workq-reason"] == "bad"


def test_foreign_message_gets_a_stable_id_and_its_tenant_from_the_queue() -> None:
    topo = Topology.of(QueueSpec("q"), "quorum")

    def read(redelivered: bool) -> Received:
        return received(
            topo,
            body=b"x",
            headers={"n": 1},
            message_id=None,
            priority=None,
            redelivered=redelivered,
            timestamp=7,
            token=None,
            queue="q.t.acme",
        )

    first, again = read(False), read(True)
    assert first.id == again.id and first.id.startswith("amqp-")
    assert first.lane == Lane("q", "acme")
    assert (first.attempt, again.attempt) == (1, 2)
