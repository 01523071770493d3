"""The core's receive over "take up to n from this lane" (workq.polling), I/O-free.

A receiver over plain lists: what it is asked to take, and what receive() returns,
show the lane rules (strict priority, the count spread over a level) done in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from workq.driver import Received
from workq.lanes import Lane
from workq.polling import PollingReceiver, levels, share

Q = "polling"


def lane(tenant: str | None, priority: int = 0) -> Lane:
    return Lane(Q, tenant, priority)


class ListReceiver(PollingReceiver):
    """Lanes as lists; counts exactly when ``counting``; records every take."""

    def __init__(self, lanes: dict[Lane, int], counting: bool) -> None:
        self.ready = {
            ln: [f"{ln.tenant}-{ln.priority}-{i}" for i in range(n)] for ln, n in lanes.items()
        }
        self.counting = counting
        self.takes: list[tuple[Lane, int]] = []
        self.steps = 0
        self.waits = 0

    def available(self, lanes: Sequence[Lane], up_to: int) -> Mapping[Lane, int] | None:
        if not self.counting:
            return None
        return {ln: min(len(self.ready.get(ln, [])), up_to) for ln in lanes}

    def step(self, fn: Callable[[], list[Received]]) -> list[Received]:
        self.steps += 1
        return fn()

    def take(self, lane: Lane, n: int) -> list[Received]:
        self.takes.append((lane, n))
        ids, self.ready[lane][:n] = self.ready.get(lane, [])[:n], []
        return [Received(lane, mid, b"", {}, 1, 0.0) for mid in ids]

    def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> list[Received] | None:
        self.waits += 1
        return []  # nothing came: end the receive

    def ack(self, item: Received) -> None: ...
    def nack(self, item: Received, delay: float | None) -> None: ...
    def dead_letter(self, item: Received, reason: str) -> None: ...
    def extend(self, items: Sequence[Received], seconds: float) -> None: ...
    def release(self, items: Sequence[Received]) -> None: ...

    def close(self) -> None:
        self.closed = True


def per_lane(got: list[Received]) -> dict[Lane, int]:
    counts: dict[Lane, int] = {}
    for item in got:
        counts[item.lane] = counts.get(item.lane, 0) + 1
    return counts


def test_levels_and_share() -> None:
    a, b, c = lane("a", 9), lane("b", 9), lane(None, 0)
    assert levels([a, b, c]) == [[a, b], [c]]
    assert [share(10, 3), share(6, 2), share(3, 1)] == [4, 3, 3]


def test_counting_takes_the_top_level_spread_then_fills_from_lower() -> None:
    hi_a, hi_b, low = lane("a", 5), lane("b", 5), lane(None, 0)
    r = ListReceiver({hi_a: 2, hi_b: 20, low: 20}, counting=True)
    got = r.receive([hi_a, hi_b, low], 10, 0.0)
    # a has 2, b gives the rest of an even split; nothing left for the lower level.
    assert per_lane(got) == {hi_a: 2, hi_b: 8}
    assert r.steps == 1


def test_counting_fills_from_a_lower_level_when_the_top_runs_short() -> None:
    hi, low = lane("a", 5), lane(None, 0)
    r = ListReceiver({hi: 3, low: 20}, counting=True)
    assert per_lane(r.receive([hi, low], 10, 0.0)) == {hi: 3, low: 7}


def test_counting_idle_receiver_takes_no_step() -> None:
    r = ListReceiver({lane("a"): 0}, counting=True)
    assert r.receive([lane("a")], 10, 1.0) == []
    assert (r.steps, r.takes, r.waits) == (0, [], 1)


def test_without_counts_each_lane_is_asked_its_share_and_lower_levels_only_when_empty() -> None:
    a, b, c, low = lane("a", 5), lane("b", 5), lane("c", 5), lane(None, 0)
    r = ListReceiver({a: 1, b: 20, c: 20, low: 20}, counting=False)
    got = r.receive([a, b, c, low], 10, 0.0)
    # What a lacks, the next lanes take: 4 asked of a (1 there), then 5 and 4.
    assert r.takes == [(a, 4), (b, 5), (c, 4)]
    assert per_lane(got) == {a: 1, b: 5, c: 4}
    r2 = ListReceiver({a: 0, low: 20}, counting=False)
    assert per_lane(r2.receive([a, low], 3, 0.0)) == {low: 3}
    assert r2.takes == [(a, 3), (low, 3)]


def test_never_takes_from_lanes_not_listed_and_nothing_once_closed() -> None:
    a, b = lane("a"), lane("b")
    r = ListReceiver({a: 5, b: 5}, counting=True)
    assert set(per_lane(r.receive([a], 10, 0.0))) == {a}
    r.close()
    assert r.receive([b], 10, 0.0) == []
    assert r.takes == [(a, 5)]


def test_a_wait_that_hears_of_work_is_followed_by_a_take() -> None:
    a = lane("a")

    class Waking(ListReceiver):
        def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> None:
            self.waits += 1
            self.ready[a] = ["late"]  # published while waiting
            return None

    r = Waking({a: 0}, counting=True)
    got = r.receive([a], 10, 5.0)
    assert [item.id for item in got] == ["late"]
    assert r.waits == 1
