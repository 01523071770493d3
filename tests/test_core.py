"""Core pieces on their own: codec, specs, lanes, retry policy, errors."""

from __future__ import annotations

import doctest
import importlib
from dataclasses import fields

import pytest
from pydantic import BaseModel

import workq
from workq.lanes import Lane, LaneBuffers, order_lanes, spread
from workq.messages import (
    Outgoing,
    build_outgoing,
    check_headers,
    encode_body,
    meta_headers,
    split_meta,
)
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


def test_meta_headers_round_trip() -> None:
    msg = Outgoing(Lane("q", "t", 3), "id1", b"", {"trace": "x"}, attempt=2, enqueued_at=5.0)
    user, meta = split_meta(meta_headers(msg))
    assert user == {"trace": "x"}
    assert meta == {
        "id": "id1",
        "attempt": "2",
        "enqueued-at": "5.0",
        "tenant": "t",
        "priority": "3",
    }


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
        "workq.messages",
        "workq.spec",
        "workq.policy",
        "workq.settings",
        "workq.broker",
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
