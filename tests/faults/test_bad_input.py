"""Bad arguments fail before any I/O, with TypeError/ValueError naming the argument, the
value and what is allowed; on every backend, sync and aio, and on the command line."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

import workq
from workq.cli import cli
from workq.testing.conformance import unique, until

NAN = math.nan
INF = math.inf

#: (label, call on a producer and a fresh queue, exception, what the message must say)
PUBLISH: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("delay inf", {"delay": INF}, ValueError, "delay=inf is not allowed: it must be a finite"),
    ("delay nan", {"delay": NAN}, ValueError, "delay=nan is not allowed"),
    ("delay negative", {"delay": -1}, ValueError, "delay=-1 is not allowed"),
    ("delay str", {"delay": "5"}, TypeError, "delay='5' is a str"),
    ("message_id int", {"message_id": 123}, TypeError, "message_id=123 is a int: it must be"),
    ("message_id empty", {"message_id": ""}, ValueError, "message_id='' is not allowed"),
    ("headers str", {"headers": "x"}, TypeError, "headers='x' is a str: it must be a mapping"),
    ("header value int", {"headers": {"a": 1}}, TypeError, "header 'a'=1: header names and"),
    ("priority str", {"priority": "high"}, TypeError, "priority='high' is a str"),
    ("priority bool", {"priority": True}, TypeError, "priority=True is a bool"),
    ("tenant", {"tenant": "no spaces"}, ValueError, "invalid tenant name 'no spaces'"),
    ("body", {"body": 3.5}, TypeError, "cannot publish a body of type float"),
]

DECLARE: list[tuple[str, dict[str, Any], str]] = [
    ("lease nan", {"lease": NAN}, "lease=nan is not allowed: it must be a finite number"),
    ("lease 0", {"lease": 0}, "lease=0 is not allowed"),
    ("retry_delay inf", {"retry_delay": INF}, "retry_delay=inf is not allowed"),
    ("dead_letter maybe", {"dead_letter": "maybe"}, "dead_letter='maybe' is a str: it must be"),
    ("max_attempts 0", {"max_attempts": 0}, "max_attempts=0 is not allowed: it must be an int"),
    ("max_priority bool", {"max_priority": True}, "max_priority=True is a bool"),
    ("max_priority 300", {"max_priority": 300}, "max_priority=300 is not allowed"),
]

#: (label, call on a broker and a fresh queue, exception, message)
BROKER: list[tuple[str, Callable[[workq.Broker, str], object], type[Exception], str]] = [
    ("worker handler", lambda b, q: b.worker(q, "not callable"), TypeError, "handler="),  # type: ignore[arg-type]
    (
        "worker shutdown_timeout",
        lambda b, q: b.worker(q, print, shutdown_timeout="x"),  # type: ignore[arg-type]
        TypeError,
        "shutdown_timeout='x' is a str",
    ),
    (
        "worker concurrency",
        lambda b, q: b.worker(q, print, concurrency=0),
        ValueError,
        "concurrency=0 is not allowed",
    ),
    ("prefetch 0", lambda b, q: b.consumer(q, prefetch=0), ValueError, "prefetch=0 is not"),
    ("prefetch str", lambda b, q: b.consumer(q, prefetch="1"), TypeError, "prefetch='1' is a"),  # type: ignore[arg-type]
    ("tenants str", lambda b, q: b.consumer(q, tenants="acme"), TypeError, "tenants='acme'"),
    ("dead_letters limit", lambda b, q: b.dead_letters(q, limit=0), ValueError, "limit=0"),
    (
        "publish_many str",
        lambda b, q: b.producer().publish_many(q, "abc"),
        TypeError,
        "publish_many takes a list",
    ),
    ("queue name", lambda b, q: b.producer().publish("no spaces", b""), ValueError, "queue name"),
]


def _fresh(broker: workq.Broker, queue: str) -> None:
    """The queue was never declared: the bad call did no I/O for it."""
    assert broker._specs.get(queue) is None


@pytest.mark.parametrize(
    ("label", "kwargs", "exc", "message"), PUBLISH, ids=[p[0] for p in PUBLISH]
)
def test_publish_refuses_bad_arguments_before_io(
    url: str, label: str, kwargs: dict[str, Any], exc: type[Exception], message: str
) -> None:
    queue = unique("bad")
    body = kwargs.get("body", b"x")
    rest = {k: v for k, v in kwargs.items() if k != "body"}
    with workq.connect(url) as broker:
        producer = broker.producer()
        with pytest.raises(exc) as raised:
            producer.publish(queue, body, **rest)
        assert message in str(raised.value)
        with pytest.raises(exc) as raised:
            producer.publish_many(queue, [workq.Message(body, **rest)])
        assert message in str(raised.value)
        _fresh(broker, queue)


@pytest.mark.parametrize(("label", "kwargs", "message"), DECLARE, ids=[d[0] for d in DECLARE])
def test_declare_refuses_bad_settings(
    url: str, label: str, kwargs: dict[str, Any], message: str
) -> None:
    with workq.connect(url) as broker, pytest.raises(ValueError) as raised:
        broker.declare(unique("bad"), **kwargs)
    assert isinstance(raised.value, workq.ConfigurationError)
    assert message in str(raised.value)


@pytest.mark.parametrize(("label", "call", "exc", "message"), BROKER, ids=[b[0] for b in BROKER])
def test_broker_calls_refuse_bad_arguments(
    url: str,
    label: str,
    call: Callable[[workq.Broker, str], object],
    exc: type[Exception],
    message: str,
) -> None:
    queue = unique("bad")
    with workq.connect(url) as broker:
        with pytest.raises(exc) as raised:
            call(broker, queue)
        assert message in str(raised.value)
        _fresh(broker, queue)


@pytest.mark.parametrize(
    ("timeout", "exc", "message"),
    [
        ("x", TypeError, "timeout='x' is a str"),
        (-1, ValueError, "timeout=-1 is not allowed"),
        (NAN, ValueError, "timeout=nan is not allowed"),
    ],
)
def test_get_refuses_a_bad_timeout(
    url: str, timeout: Any, exc: type[Exception], message: str
) -> None:
    with (
        workq.connect(url) as broker,
        broker.consumer(unique("bad")) as consumer,
        pytest.raises(exc, match=message),
    ):
        consumer.get(timeout=timeout)


def test_settling_refuses_bad_arguments(url: str) -> None:
    queue = unique("bad")
    with workq.connect(url) as broker:
        broker.producer().publish(queue, b"x")
        with broker.consumer(queue) as consumer:
            delivery = until(lambda: consumer.get(timeout=0.5))
            with pytest.raises(ValueError, match="delay=nan is not allowed"):
                delivery.nack(delay=NAN)
            with pytest.raises(TypeError, match="reason=5 is a int"):
                delivery.reject(reason=5)  # type: ignore[arg-type]
            assert not delivery.settled
            delivery.ack()


def test_aio_refuses_the_same_arguments(url: str) -> None:
    async def main() -> None:
        queue = unique("bad")
        async with await workq.aio.connect(url) as broker:
            producer = broker.producer()
            for _, kwargs, exc, message in PUBLISH:
                body = kwargs.get("body", b"x")
                rest = {k: v for k, v in kwargs.items() if k != "body"}
                with pytest.raises(exc) as raised:
                    await producer.publish(queue, body, **rest)
                assert message in str(raised.value)
            for _, kwargs, message in DECLARE:
                with pytest.raises(workq.ConfigurationError, match=message.replace("(", r"\(")):
                    await broker.declare(unique("bad"), **kwargs)
            with pytest.raises(TypeError, match="handler="):
                broker.worker(queue, "not callable")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="shutdown_timeout='x' is a str"):
                broker.worker(queue, print, shutdown_timeout="x")  # type: ignore[arg-type]
            assert broker._specs.get(queue) is None
            async with broker.consumer(queue) as consumer:
                with pytest.raises(TypeError, match="timeout='x' is a str"):
                    await consumer.get(timeout="x")  # type: ignore[arg-type]

    asyncio.run(main())


# -- the command line ----------------------------------------------------------------

CLI: list[tuple[str, list[str], str]] = [
    ("delay nan", ["publish", "q", "x", "--delay", "nan"], "delay=nan is not allowed"),
    ("priority not a number", ["publish", "q", "x", "--priority", "high"], "--priority"),
    ("missing body", ["publish", "q"], "argument 'body'"),
    ("bad header", ["publish", "q", "x", "-H", "novalue"], "write it as name=value"),
    ("unknown option", ["stats", "q", "--bogus"], "--bogus"),
    ("bad queue", ["stats", "no spaces"], "invalid queue name"),
    ("bad limit", ["dlq", "q", "--limit", "0"], "--limit"),
]


@pytest.mark.parametrize(("label", "args", "message"), CLI, ids=[c[0] for c in CLI])
def test_cli_errors_are_one_line_with_exit_1(
    url: str, label: str, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, [*args, "--url", url])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Usage" not in result.stderr and "╭" not in result.stderr
