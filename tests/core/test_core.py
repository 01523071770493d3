"""Core pieces on their own: codec, specs, lanes, retry policy, errors."""

from __future__ import annotations

import doctest
import importlib
import random
from collections import deque
from dataclasses import fields

import pytest
from pydantic import BaseModel

import workq
from workq.checks import check_headers
from workq.codec import build_outgoing, encode_body
from workq.consumer_state import Holding
from workq.driver import Capabilities
from workq.headers import split_meta
from workq.lanes import Lane, LaneBuffers, LaneOrder, order_lanes, spread
from workq.policy import backoff, outcome
from workq.spec import QueueSpec


class Point(BaseModel):
    x: int


def test_encode_each_body_type() -> None:
    assert encode_body(b"a") == (b"a", "application/octet-stream")
    assert encode_body(bytearray(b"a"))[0] == b"a"
    assert encode_body("é") == ("é".encode(), "text/plain; charset=utf-8")
    assert encode_body([1]) == (b"[1]", "application/json")
    assert encode_body(Point(x=1)) == (b'{"x":1}', "application/json")
    with pytest.raises(TypeError, match="not JSON-able"):
        encode_body({"a": object()})
    with pytest.raises(TypeError, match="bytes, str, a JSON-able dict or list, or a pydantic"):
        encode_body(3.5)


def test_headers_are_checked() -> None:
    assert check_headers({"a": "b"}) == {"a": "b"}
    with pytest.raises(TypeError, match="must be str"):
        check_headers({"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved"):
        check_headers({"x-workq-id": "1"})
    with pytest.raises(ValueError, match="delay"):
        build_outgoing("q", b"", tenant=None, priority=0, headers=None, delay=-1, message_id=None)


def test_split_meta_separates_workq_metadata_from_user_headers() -> None:
    user, meta = split_meta(
        {"trace": "x", "x-workq-id": "id1", "x-workq-attempt": "2", "x-workq-tenant": "t"}
    )
    assert user == {"trace": "x"}
    assert meta == {"id": "id1", "attempt": "2", "tenant": "t"}


def test_spec_validation_and_conflicts() -> None:
    for bad in (
        {"max_priority": 300},
        {"max_attempts": 0},
        {"retry_delay": -1.0},
        {"lease": 0.0},
    ):
        with pytest.raises(workq.ConfigurationError, match=next(iter(bad))):
            QueueSpec("q", **bad)  # type: ignore[arg-type]
    with pytest.raises(workq.ConfigurationError, match="queue names must match"):
        QueueSpec("bad name")
    a, b = QueueSpec("q"), QueueSpec("q", lease=5.0, options={"x": 1})
    assert a.conflicts(b) == ["lease", "options"]
    with pytest.raises(workq.ConfigurationError, match=r"lease: declared 30\.0, now 5\.0"):
        a.check_same(b)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        a.check_priority(10)


def test_lane_order_rotates_tenants_within_priority() -> None:
    lanes = [Lane("q", t, p) for t in (None, "a", "b") for p in (0, 5)]
    assert order_lanes(lanes, {})[:3] == [Lane("q", None, 5), Lane("q", "a", 5), Lane("q", "b", 5)]
    assert [x.tenant for x in order_lanes(lanes, {5: "a"})[:3]] == ["b", None, "a"]
    assert [x.tenant for x in order_lanes(lanes, {5: "b"})[:3]] == [None, "a", "b"]


def test_buffers_pop_priority_then_round_robin() -> None:
    buf: LaneBuffers[str] = LaneBuffers()
    for i in range(3):
        buf.add(Lane("q", "a"), f"a{i}")
    buf.add(Lane("q", "b"), "b0")
    buf.add(Lane("q", "c", 1), "urgent")
    assert [buf.pop() for _ in range(5)] == ["urgent", "a0", "b0", "a1", "a2"]
    assert buf.pop() is None and len(buf) == 0
    buf.add(Lane("q"), "x")
    assert buf.drain() == ["x"]


def test_spread_shares_the_top_priority_then_spills_down() -> None:
    hi_a, hi_b, lo = Lane("q", "a", 9), Lane("q", "b", 9), Lane("q", None, 0)
    plan = spread([hi_a, hi_b, lo], 5, {hi_a: 10, hi_b: 1, lo: 10})
    assert plan == {hi_a: 4, hi_b: 1}
    assert spread([hi_a, lo], 5, {hi_a: 2, lo: 10}) == {hi_a: 2, lo: 3}
    assert spread([hi_a], 5, {}) == {}


def _random_lanes(rng: random.Random) -> list[Lane]:
    """A random lane set with the awkward cases: the default lane, several priorities,
    duplicates, and now and then a second queue (ties on the tenant name)."""
    tenants = [None, *(f"t{i:03d}" for i in range(rng.randint(0, 40)))]
    lanes = [
        Lane(rng.choice(["q", "q", "q", "r"]), rng.choice(tenants), rng.choice([0, 1, 5, 9]))
        for _ in range(rng.randint(0, 60))
    ]
    return lanes + rng.sample(lanes, len(lanes) // 4)  # duplicates, listed twice


def _random_turns(rng: random.Random, lanes: list[Lane]) -> dict[int, str | None]:
    """last_served as a consumer could have it: tenants listed or not (gone, or a name
    between two listed ones), None, and priorities missing or not in the lane set."""
    names = [lane.tenant for lane in lanes] or [None]
    turns: dict[int, str | None] = {}
    for priority in (0, 1, 5, 9, 3):
        roll = rng.random()
        if roll < 0.5:
            turns[priority] = rng.choice(names)
        elif roll < 0.6:
            turns[priority] = None
        elif roll < 0.8:
            turns[priority] = f"t{rng.randint(0, 45):03d}x"
    return turns


def test_lane_order_gives_exactly_the_plain_rules_order() -> None:
    rng = random.Random(14)
    for _ in range(500):
        lanes = _random_lanes(rng)
        order = LaneOrder(lanes)
        for _ in range(8):
            turns = _random_turns(rng, lanes)
            expected = order_lanes(lanes, turns)
            got = order.order(turns)
            assert got == expected
            got.reverse()  # what a caller does with its copy does not touch the kept order
            # Asked again with the same turns (an idle consumer): the kept order.
            assert order.order(dict(turns)) == expected


def test_buffers_pop_in_exactly_the_plain_rules_order() -> None:
    rng = random.Random(1414)
    for _ in range(200):
        lanes = list(set(_random_lanes(rng))) or [Lane("q")]
        buf: LaneBuffers[int] = LaneBuffers()
        plain: dict[Lane, deque[int]] = {}
        turns: dict[int, str | None] = {}
        for item in range(rng.randint(1, 300)):
            if rng.random() < 0.55:
                lane = rng.choice(lanes)
                buf.add(lane, item)
                plain.setdefault(lane, deque()).append(item)
                continue
            # The plain rule: the first of order_lanes over the lanes holding something.
            held = [lane for lane, items in plain.items() if items]
            expected = None
            if held:
                first = order_lanes(held, turns)[0]
                turns[first.priority] = first.tenant
                expected = plain[first].popleft()
            assert buf.pop() == expected
            assert len(buf) == sum(map(len, plain.values()))


def _spread_by_turns(
    lanes: list[Lane], max_count: int, available: dict[Lane, int]
) -> dict[Lane, int]:
    """spread's rule taken literally: one message per turn, round-robin over a level's
    lanes with messages (in the given order), the top level first."""
    plan: dict[Lane, int] = {}
    remaining = max_count
    for priority in sorted({lane.priority for lane in lanes}, reverse=True):
        group = [x for x in dict.fromkeys(lanes) if x.priority == priority]
        while remaining > 0:
            turn = [x for x in group if available.get(x, 0) > plan.get(x, 0)]
            for lane in turn[:remaining]:
                plan[lane] = plan.get(lane, 0) + 1
            remaining -= len(turn[:remaining])
            if not turn:
                break
    return plan


def test_spread_gives_the_plain_turn_by_turn_plan() -> None:
    rng = random.Random(141414)
    for _ in range(500):
        lanes = list(dict.fromkeys(_random_lanes(rng)))
        turns = _random_turns(rng, lanes)
        ordered = LaneOrder(lanes).order(turns)
        available = {lane: rng.choice([0, 0, 0, 1, 2, 7]) for lane in lanes if rng.random() < 0.5}
        max_count = rng.choice([0, 1, 3, 10, 50])
        assert spread(ordered, max_count, available) == _spread_by_turns(
            ordered, max_count, available
        )


def test_holding_sorts_lanes_once_per_lane_set_change() -> None:
    rng = random.Random(7)
    spec = QueueSpec("q")
    state = Holding(spec, Capabilities(backend="memory", lease_model="lease"), 10, None)
    lanes = [Lane("q", f"t{i:03d}", rng.choice([0, 5])) for i in range(50)]
    state.set_lanes(lanes)
    sorted_once = state._order
    for _ in range(200):
        turns = _random_turns(rng, lanes)
        state.buffers.last_served.clear()
        state.buffers.last_served.update(turns)
        # The same lanes listed again (equal, not the same objects): nothing re-sorted.
        state.set_lanes([Lane(x.queue, x.tenant, x.priority) for x in lanes])
        assert state._order is sorted_once
        assert state.fetch_plan()[0] == order_lanes(lanes, turns)
    # A new tenant's lane (and another queue's, left out): sorted again, in its place.
    state.set_lanes([*lanes, Lane("q", "t0205"), Lane("other", "t001")])
    assert state._order is not sorted_once
    assert state.fetch_plan()[0] == order_lanes([*lanes, Lane("q", "t0205")], turns)


def test_backoff_and_outcomes() -> None:
    spec = QueueSpec("q", retry_delay=2.0)
    assert [backoff(spec, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(spec, 30) == 300.0
    assert outcome(spec, 1, None).action == "ack"
    assert outcome(spec, 1, workq.Retry(delay=3)).delay == 3
    assert outcome(spec, 1, workq.Reject("no")).reason == "no"
    failed = outcome(spec, 2, KeyError("k"))
    assert (failed.action, failed.delay, failed.reason) == ("nack", 4.0, "KeyError: 'k'")


def test_error_hierarchy() -> None:
    for cls in (
        workq.ConfigurationError,
        workq.BrokerUnavailable,
        workq.PublishError,
        workq.AlreadySettled,
        workq.Unsupported,
    ):
        assert issubclass(cls, workq.WorkqError)
    err = workq.Unsupported("memory", "clustering")
    assert (err.backend, str(err)) == ("memory", "the memory backend does not support clustering")
    assert issubclass(workq.MessageTooLarge, workq.PublishError)


@pytest.mark.parametrize(
    "module",
    [
        "workq",
        "workq.aio",
        "workq.message",
        "workq.codec",
        "workq.spec",
        "workq.policy",
        "workq.settings",
        "workq._envsettings",
        "workq.broker",
        "workq.backends.rabbitmq.management",
        "workq.backends.sqs.naming",
        "workq.backends.kafka.topics",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_check_options_names_unknown_and_allowed() -> None:
    QueueSpec("q", options={"ordering": "key"}).check_options("kafka", {"ordering"})
    with pytest.raises(workq.ConfigurationError, match=r"colour for the memory backend; it takes"):
        QueueSpec("q", options={"colour": 1}).check_options("memory")
    with pytest.raises(workq.ConfigurationError, match=r"x for the kafka backend; allowed: a, b"):
        QueueSpec("q", options={"x": 1}).check_options("kafka", ["b", "a"])
    assert set(QueueSpec.SETTINGS) | {"name", "options"} == {f.name for f in fields(QueueSpec)}


# -- closed, checks, shared decisions, bounds (issue 10) ------------------------------


def test_adopt_or_conflict_rules() -> None:
    from workq.declarations import Stored, adopt_or_conflict

    base, other = QueueSpec("q"), QueueSpec("q", max_attempts=2)
    assert adopt_or_conflict(None, base, True) == (base, Stored(base, True))
    assert adopt_or_conflict(None, base, False) == (base, Stored(base, False))
    assert adopt_or_conflict(Stored(other, False), base, True) == (other, None)
    assert adopt_or_conflict(Stored(other, True), base, False) == (base, Stored(base, False))
    assert adopt_or_conflict(Stored(base, False), base, False) == (base, None)
    with pytest.raises(workq.ConfigurationError, match="max_attempts: declared 2, now 5"):
        adopt_or_conflict(Stored(other, False), base, False)


def test_checks_name_argument_value_and_rule() -> None:
    from workq.checks import check_bool, check_callable, check_int, check_seconds

    assert check_seconds("t", 0) == 0.0
    assert check_seconds("t", None, optional=True) is None
    with pytest.raises(TypeError, match="t=None is not allowed"):
        check_seconds("t", None)
    with pytest.raises(ValueError, match="> 0"):
        check_seconds("t", 0, positive=True)
    with pytest.raises(TypeError, match="t=True is a bool"):
        check_seconds("t", True)
    assert check_bool("b", False) is False
    with pytest.raises(TypeError, match="b=1 is a int: it must be True or False"):
        check_bool("b", 1)
    with pytest.raises(ValueError, match=r"an int 0\.\.3"):
        check_int("n", 4, 0, 3)
    with pytest.raises(TypeError, match="not callable"):
        check_callable("handler", 3)


def test_a_dead_lease_keeper_fails_calls_instead_of_dying_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with workq.connect("memory://") as broker:
        broker.declare("q", lease=0.03)
        broker.producer().publish("q", b"x")
        with broker.consumer("q") as consumer:
            assert consumer.get(timeout=1) is not None

            def broken() -> list[object]:
                raise RuntimeError("bug in the keeper")

            monkeypatch.setattr(consumer._state, "held_items", broken)
            with pytest.raises(workq.WorkqError, match=r"stopped working .*bug in the keeper"):
                for _ in range(500):
                    consumer.get(timeout=0.01)
    assert "background task of the consumer" in caplog.text


def test_failing_lease_extensions_warn_once_and_say_when_they_work_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    with workq.connect("memory://") as broker:
        broker.declare("q", lease=0.03)
        broker.producer().publish("q", b"x")
        with broker.consumer("q") as consumer, caplog.at_level(logging.INFO, logger="workq"):
            d = consumer.get(timeout=1)
            assert d is not None
            receiver = consumer._receiver
            real = receiver.extend
            calls = {"n": 0}
            healed = threading.Event()

            def flaky(items: object, seconds: float) -> None:
                calls["n"] += 1
                if calls["n"] <= 3:
                    raise OSError("network down")
                real(items, seconds)  # type: ignore[arg-type]
                healed.set()

            monkeypatch.setattr(receiver, "extend", flaky)
            assert healed.wait(5)
            d.ack()
    assert caplog.text.count("extending leases on queue 'q' failed") == 1
    assert "works again" in caplog.text


def test_call_bounded_gives_up_on_a_hung_call(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from workq.driver import call_bounded

    release = threading.Event()
    assert call_bounded(lambda: release.wait(5), 0.05, "a hung close") is False
    release.set()
    assert "a hung close did not finish within" in caplog.text
    assert call_bounded(lambda: None, 1, "quick") is True
    with pytest.raises(ValueError, match="boom"):
        call_bounded(lambda: (_ for _ in ()).throw(ValueError("boom")), 1, "raising")


class _Hanging:
    """A memory receiver whose receive and close hang: a driver that stopped answering."""

    def __init__(self, inner: object, release: object) -> None:
        self._inner = inner
        self._release = release

    def receive(self, lanes: object, max_count: int, timeout: float) -> list[object]:
        self._release.wait(30)  # type: ignore[attr-defined]
        return []

    def close(self) -> None:
        self._release.wait(30)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_close_returns_even_if_the_driver_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import workq.broker
    import workq.consumer

    monkeypatch.setattr(workq.consumer, "CLOSE_TIMEOUT", 0.1)
    monkeypatch.setattr(workq.broker, "CLOSE_TIMEOUT", 0.1)
    monkeypatch.setattr(workq.consumer, "POLL_SLICE", 0.1)
    release = threading.Event()
    broker = workq.connect("memory://")
    consumer = broker.consumer("q")
    consumer._receiver = _Hanging(consumer._receiver, release)  # type: ignore[assignment]
    consumer.close()
    assert consumer.closed
    broker.close()
    release.set()


def test_aio_get_gives_up_on_a_hung_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    import workq.aio.consumer

    monkeypatch.setattr(workq.aio.consumer, "RECEIVE_GRACE", 0.1)
    monkeypatch.setattr(workq.aio.consumer, "CLOSE_TIMEOUT", 0.1)
    release = threading.Event()

    async def main() -> None:
        broker = await workq.aio.connect("memory://")
        await broker.producer().publish("q", b"x")  # a lane to receive from
        consumer = await broker.consumer("q")
        consumer._receiver.sync = _Hanging(consumer._receiver.sync, release)  # type: ignore[union-attr]
        with pytest.raises(workq.BrokerUnavailable, match="did not finish within"):
            await consumer.get(timeout=0.1)
        await consumer.close()
        await broker.close()

    try:
        asyncio.run(main())
    finally:
        release.set()


def test_aio_dead_lease_keeper_fails_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def main() -> None:
        async with await workq.aio.connect("memory://") as broker:
            await broker.declare("q", lease=0.03)
            await broker.producer().publish("q", b"x")
            async with broker.consumer("q") as consumer:
                assert await consumer.get(timeout=1) is not None

                def broken() -> list[object]:
                    raise RuntimeError("bug in the keeper")

                monkeypatch.setattr(consumer._state, "held_items", broken)
                with pytest.raises(workq.WorkqError, match="bug in the keeper"):
                    for _ in range(500):
                        await consumer.get(timeout=0.01)
                with pytest.raises(workq.WorkqError, match="stopped working"):
                    await consumer.release_unstarted()

    asyncio.run(main())


def test_old_messages_module_still_imports_the_public_names_with_a_warning() -> None:
    import workq.driver
    import workq.messages

    with pytest.warns(DeprecationWarning, match=r"import workq\.driver\.Received instead"):
        assert workq.messages.Received is workq.driver.Received
    with pytest.warns(DeprecationWarning, match=r"import workq\.Message instead"):
        assert workq.messages.Message is workq.Message
    with pytest.raises(AttributeError):
        workq.messages.encode_body  # noqa: B018  (internal: moved without a shim)
