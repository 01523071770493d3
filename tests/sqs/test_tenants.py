"""Many tenant lanes on SQS: idle cost by the doorbell, discovery, and fairness kept."""

from __future__ import annotations

import pytest

import workq
from workq.backends.sqs.driver import SQSDriver
from workq.lanes import Lane
from workq.testing.conformance import WAIT, unique, until

pytestmark = pytest.mark.sqs


def driver_of(broker: workq.Broker) -> SQSDriver:
    assert isinstance(broker.driver, SQSDriver)
    return broker.driver


def make_lanes(broker: workq.Broker, queue: str, tenants: int) -> None:
    spec = broker.declare(queue)
    for t in range(tenants):
        driver_of(broker).lane_url(spec, Lane(queue, f"t{t:03d}"), create=True)


def test_an_idle_consumer_does_not_poll_every_lane_every_time(
    broker: workq.Broker, sqs_url: str
) -> None:
    queue = unique("n")
    make_lanes(broker, queue, 30)
    with broker.consumer(queue) as c:
        assert c.get(timeout=1.0) is None  # the first receive looks at every lane once
        counts = driver_of(broker).sqs.requests
        counts.clear()
        driver_of(broker).doorbell.reads = 0
        for _ in range(5):
            assert c.get(timeout=1.0) is None
        # One long poll of the doorbell per get, and the odd listing: not the 30
        # receives per get of polling every lane.
        assert sum(counts.values()) <= 5 + 2, counts
        assert counts["ReceiveMessage"] - driver_of(broker).doorbell.reads == 0, counts
        # A message for a quiet tenant, from another process's producer: the doorbell
        # brings it at once, with no listing in between.
        with workq.connect(sqs_url) as other:
            mid = other.producer().publish(queue, "hello", tenant="t017")

        def delivered() -> workq.Delivery | None:
            return c.get(timeout=1.0)

        d = until(delivered, what="the quiet tenant's message")
        assert d is not None and (d.id, d.tenant) == (mid, "t017")
        d.ack()


def test_a_new_tenant_is_found_through_the_doorbell(broker: workq.Broker, sqs_url: str) -> None:
    queue = unique("n")
    make_lanes(broker, queue, 5)
    with broker.consumer(queue, tenants=None) as c:
        assert c.get(timeout=1.0) is None
        with workq.connect(sqs_url) as other:
            mid = other.producer().publish(queue, "first", tenant="newcomer", priority=3)
        d = until(lambda: c.get(timeout=1.0), what="the new tenant's first message")
        assert d is not None and (d.id, d.tenant, d.priority) == (mid, "newcomer", 3)
        d.ack()


def test_quiet_tenants_are_served_before_a_noisy_one_drains(
    broker: workq.Broker, sqs_url: str
) -> None:
    """A smaller run of the issue's check: 40 quiet tenants with one message each and a
    noisy one with a backlog: every quiet message comes before the noisy tenant's 50th."""
    queue = unique("n")
    quiet = 40
    broker.declare(queue, lease=60.0)
    producer = broker.producer()
    producer.publish_many(queue, [workq.Message(f"n{i}", tenant="noisy") for i in range(120)])
    producer.publish_many(queue, [workq.Message(f"q{i}", tenant=f"q{i:02d}") for i in range(quiet)])
    order: list[str] = []
    with workq.connect(sqs_url) as fresh, fresh.consumer(queue, prefetch=10) as c:

        def all_quiet() -> bool:
            d = c.get(timeout=1.0)
            if d is not None:
                order.append(d.tenant or "")
                d.ack()
            return sum(1 for t in order if t != "noisy") == quiet

        until(all_quiet, timeout=WAIT * 4, what="every quiet tenant's message")
    assert order.count("noisy") < 50, order
