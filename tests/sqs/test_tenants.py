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


def test_a_burst_of_notes_is_read_in_one_look(broker: workq.Broker, sqs_url: str) -> None:
    """A publish to many lanes leaves many notes; a consumer must not read them 10 a
    look, or a later note waits behind them and can expire unread (notes live 60 s)."""
    queue = unique("n")
    lanes = 150
    broker.declare(queue)
    broker.producer().publish_many(
        queue, [workq.Message(f"m{t}", tenant=f"t{t:03d}") for t in range(lanes)]
    )
    bell = driver_of(broker).doorbell.url(queue)

    def notes_left() -> int:
        attrs = driver_of(broker).sqs.client.get_queue_attributes(
            QueueUrl=bell,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    assert notes_left() == lanes
    driver_of(broker).doorbell.reads = 0
    with broker.consumer(queue, tenants=None) as c:
        d = c.get(timeout=1.0)  # a receive that took something looks at the doorbell
        assert d is not None
        d.ack()
        assert notes_left() == 0
        assert driver_of(broker).doorbell.reads == lanes // 10 + 1


def test_a_stale_note_costs_a_few_rechecks_then_the_sweep() -> None:
    from workq.backends.sqs.doorbell import Pacer

    lane = Lane("q", "t")
    pace = Pacer(Lane("q"), lease=30.0, sweep=1200.0)
    now = 1000.0
    pace.rang(lane, now)
    gaps = []
    for _ in range(4):
        assert pace.due(lane, now)
        pace.empty(lane, now)  # the poll found nothing: the note was stale
        nxt = now
        while not pace.due(lane, nxt):
            nxt += 0.5
        gaps.append(nxt - now)
        now = nxt
    assert gaps[:3] == [1.0, 2.0, 4.0]
    assert gaps[3] >= 600.0  # left to the sweep, not doubled on through 8, 16, 32...


def test_a_note_older_than_its_lanes_last_poll_is_stale() -> None:
    """A note sent before a poll of its lane began (by more than the clock margin) tells
    of work that poll saw: reading it costs no poll. This is what makes a consumer's
    start-up poll of every lane cover the notes of work done before it started."""
    from workq.backends.sqs.doorbell import STALE_MARGIN, Note, Pacer

    lane = Lane("q", "t")
    pace = Pacer(Lane("q"), lease=30.0, sweep=1200.0)
    assert not pace.stale(Note(lane, 0.0, "h", sent=500.0))  # never polled
    pace.polling(lane, 1000.0)
    assert pace.stale(Note(lane, 0.0, "h", sent=1000.0 - STALE_MARGIN - 0.1))
    assert not pace.stale(Note(lane, 0.0, "h", sent=1000.0 - STALE_MARGIN + 0.1))
    assert not pace.stale(Note(lane, 0.0, "h", sent=1001.0))  # sent during or after
    # A delayed message's note is never stale: it tells when the message shows.
    assert not pace.stale(Note(lane, 5.0, "h", sent=900.0))
    assert not pace.stale(Note(Lane("q", "other"), 0.0, "h", sent=900.0))
    # A server that did not say when the note was sent: never taken as stale.
    assert not pace.stale(Note(lane, 0.0, "h", sent=0.0))
