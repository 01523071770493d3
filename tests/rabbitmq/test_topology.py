"""The RabbitMQ mapping's pure parts: names, arguments, delay buckets, the registry."""

from __future__ import annotations

import pytest

from workq.backends.rabbitmq.topology import (
    DELAY,
    Registry,
    Topology,
    delay_ms,
    delay_record,
    lane_record,
    own_dlx,
    spec_record,
)
from workq.errors import ConfigurationError
from workq.lanes import Lane
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


def test_lane_of_queue_reads_tenant_and_priority_back() -> None:
    quorum = Topology.of(QueueSpec("q", max_priority=5), "quorum", "team.")
    for lane in (Lane("q"), Lane("q", "acme"), Lane("q", "acme", 5), Lane("q", None, 3)):
        assert quorum.lane_of_queue(quorum.lane_queue(lane)) == lane
    assert quorum.lane_queue(Lane("q", "acme")) == "team.q.t.acme"
    assert quorum.lane_of_queue("other") is None
    classic = Topology.of(QueueSpec("q", options={"queue_type": "classic"}), "quorum")
    assert classic.lane_of_queue("q.t.a.p5") == Lane("q", "a.p5")  # classic: no .pN lanes


def test_own_dlx_is_read_from_either_form_of_the_refusal() -> None:
    named = (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in "
        "vhost '/': received 'workq.probe.dlx' but current is 'their.dlx'"
    )
    none = (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in "
        "vhost '/': received the value 'workq.probe.dlx' of type 'longstr' but current is none"
    )
    assert own_dlx(named) == "their.dlx"
    assert own_dlx(none) is None
    assert own_dlx("PRECONDITION_FAILED - inequivalent arg 'durable'") is None


def test_one_declaration_plan_for_both_drivers() -> None:
    from workq.backends.rabbitmq.plan import (
        Bind,
        Exchange,
        Queue,
        base_steps,
        delay_steps,
        delays_to_declare,
        lanes_to_declare,
    )
    from workq.backends.rabbitmq.topology import DELAY_REDECLARE, Declared

    topo = Topology("q", "classic", 9)
    assert base_steps(topo) == [
        Exchange("workq.q", "direct"),
        Exchange("workq.q.dlx", "fanout"),
        Exchange("workq.q.delay", "headers"),
        Queue("q.dlq", {"x-queue-type": "classic"}),
        Bind("q.dlq", "workq.q.dlx", ""),
        Bind("q", "workq.q", ""),
        Queue("q.meta", {"x-queue-type": "classic"}),
    ]
    assert delay_steps(topo, 1300)[1] == Bind(
        "q.delay.1300", "workq.q.delay", "", {"x-match": "all", DELAY: "1300"}
    )
    declared = Declared()
    declared.mark("q.t.b")
    # Classic queues hold every priority of a tenant in one queue: declared once.
    lanes = {Lane("q", "a", 5), Lane("q", "a", 0), Lane("q", "b", 1), Lane("q")}
    assert lanes_to_declare(topo, lanes, declared) == [Lane("q"), Lane("q", "a")]
    declared.names["q.delay.50"] = declared.names["q.t.b"] - DELAY_REDECLARE - 1
    declared.mark("q.delay.100")
    assert delays_to_declare(topo, {100, 50, 200}, declared) == [50, 200]
