"""The push receivers' shared decisions (``subscriptions.py``): no broker needed, as the
module does no I/O; the receivers' behaviour on a real broker is in the conformance
suite and ``tests/test_tenants_fairness.py``."""

from __future__ import annotations

from workq.backends.rabbitmq.subscriptions import Subscriptions, credit_for
from workq.backends.rabbitmq.topology import Topology
from workq.driver import Received
from workq.lanes import Lane

QUORUM = Topology("q", "quorum", 9)


def item(lane: Lane, n: int = 0) -> Received:
    return Received(lane, f"{lane.tenant}-{lane.priority}-{n}", b"", {}, 1, 0.0)


def subscribed(lanes: list[Lane], prefetch: int = 10) -> Subscriptions:
    subs = Subscriptions(QUORUM, prefetch)
    for q in subs.changes(lanes).consume:
        subs.subscribe(q)
    return subs


def test_credit_shares_the_prefetch_and_is_never_zero() -> None:
    assert [credit_for(10, n) for n in (1, 3, 10, 11, 1000)] == [10, 3, 1, 1, 1]


def test_changes_subscribe_new_lanes_and_cancel_gone_ones() -> None:
    a, b, c = Lane("q", "a"), Lane("q", "b"), Lane("q", "c")
    subs = subscribed([a, b])
    assert not subs.changes([b, a])  # same lanes, another order: nothing to do
    changes = subs.changes([b, c])
    assert changes.consume == ["q.t.c"] and changes.cancel == ["q.t.a"]
    assert changes.credit == credit_for(10, 2)


def test_take_follows_the_consumers_lane_order_round_robin() -> None:
    a, b = Lane("q", "a"), Lane("q", "b")
    subs = subscribed([a, b])
    for n in range(3):
        subs.pushed(subs.tags["q.t.a"], item(a, n))
    subs.pushed(subs.tags["q.t.b"], item(b))
    got = subs.take([b, a], 3)
    assert sorted(i.lane.tenant or "" for i in got) == ["a", "a", "b"]
    assert len(subs) == 1


def test_a_busy_higher_level_is_asked_before_a_lower_one_is_served() -> None:
    high, low = Lane("q", None, 9), Lane("q", None, 0)
    subs = subscribed([high, low])
    subs.pushed(subs.tags["q.p9"], item(high))
    subs.pushed(subs.tags["q"], item(low))
    out, gets = subs.next([high, low], 1)
    assert [i.lane.priority for i in out] == [9] and gets == []
    # The p9 lane pushed and nothing of it waits: it may hold more than its credit.
    out, gets = subs.next([high, low], 1)
    assert out == [] and gets == [["q.p9"]]
    subs.got("q.p9", None)  # one empty answer: a push may be just behind it
    assert subs.next([high, low], 1) == ([], [["q.p9"]])
    subs.got("q.p9", None)  # empty twice: the p0 message may go now
    out, gets = subs.next([high, low], 1)
    assert [i.lane.priority for i in out] == [0] and gets == []


def test_a_push_just_behind_an_empty_get_still_goes_first() -> None:
    # The ack of the first p9 message freed its credit; the broker pushed the second one
    # and then answered the get empty, writing the answer first. The p9 message must
    # still go before the p0 one (strict priority).
    high, low = Lane("q", None, 9), Lane("q", None, 0)
    subs = subscribed([high, low])
    subs.pushed(subs.tags["q.p9"], item(high, 1))
    subs.pushed(subs.tags["q"], item(low))
    assert [i.lane.priority for i in subs.next([high, low], 1)[0]] == [9]
    assert subs.next([high, low], 1) == ([], [["q.p9"]])
    subs.got("q.p9", None)  # the push is still on the wire
    assert subs.next([high, low], 1) == ([], [["q.p9"]])
    subs.pushed(subs.tags["q.p9"], item(high, 2))  # read while the second get waits
    subs.got("q.p9", None)
    out, gets = subs.next([high, low], 1)
    assert [i.id for i in out] == ["None-9-2"] and gets == []


def test_a_single_lane_never_gets() -> None:
    lane = Lane("q")
    subs = subscribed([lane])
    subs.pushed(subs.tags["q"], item(lane))
    assert subs.next([lane], 5)[0] and subs.next([lane], 5) == ([], [])


def test_late_deliveries_of_cancelled_subscriptions_are_given_back() -> None:
    a, b = Lane("q", "a"), Lane("q", "b")
    subs = subscribed([a, b])
    tag = subs.tags["q.t.a"]
    subs.pushed(tag, item(a, 1))
    assert [i.id for i in subs.cancelled("q.t.a")] == ["a-0-1"]
    subs.pushed(tag, item(a, 2))  # on its way before the cancel took effect
    assert subs.take([b], 5) == []
    assert [i.id for i in subs.strays()] == ["a-0-2"]
    tags = subs.cancel_all()
    subs.forget([tag, *tags])
    assert subs.tags == {} and subs.queues == {} and len(subs) == 0


def test_a_missing_lane_queue_is_left_out_then_probed_before_subscribing_again() -> None:
    a, b = Lane("q", "a"), Lane("q", "b")
    subs = Subscriptions(QUORUM, 10)
    subs.closed("NOT_FOUND - no queue 'q.t.b' in vhost '/'")
    changes = subs.changes([a, b])
    assert changes.consume == ["q.t.a"] and changes.probe == []
    subs.missing["q.t.b"] -= 3600  # long ago: look again
    changes = subs.changes([a, b])
    assert changes.consume == ["q.t.a", "q.t.b"] and changes.probe == ["q.t.b"]
    subs.probed("q.t.b", False)
    assert subs.changes([a, b]).consume == ["q.t.a"]
    subs.missing["q.t.b"] -= 3600
    subs.probed("q.t.b", True)
    assert subs.changes([a, b]).consume == ["q.t.a", "q.t.b"]
