"""workq beside plain AMQP clients: raw pika on the other end, sync and aio twins.

Queues another team made are adopted as they are; messages from plain producers map
from their AMQP properties; workq's own messages carry native AMQP properties.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

import workq
import workq.aio
from workq.backends.rabbitmq.codec import header_text
from workq.spec import QueueSpec
from workq.testing.conformance import unique

pytestmark = pytest.mark.rabbitmq

WAIT = 30.0


@pytest.fixture
def raw(rabbitmq_url: str) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        yield conn
    finally:
        conn.close()


def get_one(broker: workq.Broker, q: str) -> workq.Delivery:
    with broker.consumer(q) as c:
        d = c.get(timeout=WAIT)
        assert d is not None
        d.ack()
        return d


def raw_get(raw: Any, queue: str) -> tuple[Any, Any, bytes]:
    ch = raw.channel()
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None, f"nothing in {queue!r}"
    return method, props, body


def exists(raw: Any, kind: str, name: str) -> bool:
    ch = raw.channel()
    try:
        if kind == "queue":
            ch.queue_declare(name, passive=True)
        else:
            ch.exchange_declare(name, passive=True)
        ch.close()
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False


def test_header_rule_turns_every_amqp_type_into_a_string() -> None:
    stamp = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    assert header_text("s") == "s"
    assert header_text(b"\xff") == "base64:/w=="
    assert header_text(False) == "false"
    assert header_text(12) == "12"
    assert header_text(1.5) == "1.5"
    assert header_text(decimal.Decimal("2.50")) == "2.50"
    assert header_text(None) == ""
    assert header_text(stamp) == "2024-05-01T12:00:00+00:00"
    assert header_text({"a": [1, True]}) == '{"a": ["1", "true"]}'


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"x-max-priority": 5},
        {"x-queue-type": "quorum", "x-delivery-limit": 5},
        {"x-message-ttl": 600_000, "x-max-length": 1000},
    ],
    ids=["bare-classic", "classic-priority", "quorum-delivery-limit", "classic-limits"],
)
def test_existing_queue_is_adopted_as_it_is(
    rabbitmq_url: str, raw: Any, arguments: dict[str, Any]
) -> None:
    q = unique()
    raw.channel().queue_declare(q, durable=True, arguments=arguments)
    with workq.connect(rabbitmq_url) as broker:
        broker.producer().publish(q, "from workq")
        assert get_one(broker, q).text() == "from workq"
        assert broker.stats(q).ready == 0

    async def aio() -> None:
        async with await workq.aio.connect(rabbitmq_url) as broker:
            async with broker.producer() as p:
                await p.publish(q, "from workq.aio")
            async with broker.consumer(q) as c:
                d = await c.get(timeout=WAIT)
                assert d is not None and d.text() == "from workq.aio"
                await d.ack()

    asyncio.run(aio())


def test_adopted_queue_keeps_its_own_dead_letter_exchange(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    ch = raw.channel()
    ch.exchange_declare(f"{q}.their-dlx", "fanout", durable=True)
    ch.queue_declare(f"{q}.their-dead", durable=True)
    ch.queue_bind(f"{q}.their-dead", f"{q}.their-dlx")
    ch.queue_declare(q, durable=True, arguments={"x-dead-letter-exchange": f"{q}.their-dlx"})
    with workq.connect(rabbitmq_url) as broker:
        broker.producer().publish(q, "poison")
        with broker.consumer(q) as c:
            d = c.get(timeout=WAIT)
            assert d is not None
            d.reject("bad")
    _, _, body = raw_get(raw, f"{q}.their-dead")
    assert body == b"poison"


def test_plain_producer_to_workq_consumer_maps_amqp_properties(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    ch = raw.channel()
    ch.queue_declare(q, durable=True, arguments={"x-max-priority": 5})
    headers = {"n": 7, "ok": True, "raw": b"bytes", "list": [1, "a"], "s": "text"}
    props = pika.BasicProperties(
        headers=headers, content_type="application/json", timestamp=1_700_000_000, priority=3
    )
    ch.basic_publish("", q, b'{"a": 1}', props)
    ch.basic_publish("", q, b"second", pika.BasicProperties(message_id="given-id"))
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q, queue_type="classic", max_priority=5)
        with broker.consumer(q, prefetch=1) as c:
            first = c.get(timeout=WAIT)
            assert first is not None
            first_id = first.id
        # Not acked: redelivered, with the same id.
        with broker.consumer(q, prefetch=1) as c:
            again = c.get(timeout=WAIT)
            assert again is not None
            assert again.id == first_id and first_id.startswith("amqp-")
            assert again.json() == {"a": 1}
            assert again.priority == 3
            assert again.enqueued_at.timestamp() == 1_700_000_000
            assert again.headers == {
                "n": "7",
                "ok": "true",
                "raw": "bytes",
                "list": '["1", "a"]',
                "s": "text",
                "content-type": "application/json",
            }
            again.ack()
            second = c.get(timeout=WAIT)
            assert second is not None and second.id == "given-id"
            second.ack()


def test_routing_key_names_the_tenant(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    with workq.connect(rabbitmq_url) as broker:
        broker.producer().publish(q, "made the lane", tenant="acme")
        assert get_one(broker, q).tenant == "acme"
        # A plain client routes by tenant through workq's exchange, setting no header.
        raw.channel().basic_publish(f"workq.{q}", "acme", b"plain")
        with broker.consumer(q, tenants=["acme"]) as c:
            d = c.get(timeout=WAIT)
            assert d is not None and d.text() == "plain" and d.tenant == "acme"
            d.ack()


def test_workq_messages_carry_native_amqp_properties(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q, queue_type="classic", max_priority=5)
        mid = broker.producer().publish(q, {"x": 1}, priority=4, headers={"trace": "t1"})
    _, props, body = raw_get(raw, q)
    assert body == b'{"x":1}' or body == b'{"x": 1}'
    assert props.content_type == "application/json"
    assert props.message_id == mid
    assert props.priority == 4
    assert props.delivery_mode == 2
    assert isinstance(props.timestamp, int) and props.timestamp > 0
    assert props.headers["trace"] == "t1"
    assert "content-type" not in props.headers


def test_passive_declare_creates_nothing(rabbitmq_url: str, raw: Any) -> None:
    missing, there, theirs = unique(), unique(), unique()
    raw.channel().queue_declare(theirs, durable=True)  # another team's bare queue
    with workq.connect(rabbitmq_url) as broker:
        with pytest.raises(workq.QueueNotFound, match="does not exist"):
            broker.declare(missing, passive=True)
        broker.declare(there, max_attempts=4)
        assert broker.declare(there, passive=True).max_attempts == 4
        assert broker.declare(theirs, passive=True) == QueueSpec(theirs)
        with pytest.raises(workq.ConfigurationError, match="takes no settings"):
            broker.declare(there, passive=True, max_attempts=4)

    async def aio() -> None:
        async with await workq.aio.connect(rabbitmq_url) as abroker:
            with pytest.raises(workq.QueueNotFound, match="does not exist"):
                await abroker.declare(missing, passive=True)
            assert (await abroker.declare(there, passive=True)).max_attempts == 4
            assert await abroker.declare(theirs, passive=True) == QueueSpec(theirs)

    asyncio.run(aio())
    for kind, name in [
        ("queue", missing),
        ("exchange", f"workq.{missing}"),
        ("queue", f"{missing}.dlq"),
        ("queue", f"{missing}.meta"),
        ("exchange", f"workq.{theirs}"),
        ("queue", f"{theirs}.meta"),
    ]:
        assert not exists(raw, kind, name), name


def tenant_exchange(raw: Any, rabbitmq_url: str, q: str, kind: str) -> str:
    """A plain-pika exchange routing ``tenant.NAME`` (topic) or ``NAME`` (direct) to the
    tenant lane queues of workq queue ``q``, which workq made (and recorded, so that
    consumers with ``tenants=`` find them) by publishing to each tenant once."""
    with workq.connect(rabbitmq_url) as broker:
        for tenant in ("acme", "globex"):
            broker.producer().publish(q, "seed", tenant=tenant)
            with broker.consumer(q, tenants=[tenant]) as c:
                d = c.get(timeout=WAIT)
                assert d is not None and d.text() == "seed"
                d.ack()
    ex = f"{q}.tenants"
    ch = raw.channel()
    ch.exchange_declare(ex, kind, durable=True)
    for tenant in ("acme", "globex"):
        key = f"tenant.{tenant}" if kind == "topic" else tenant
        ch.queue_bind(f"{q}.t.{tenant}", ex, key)
    return ex


def test_publish_through_an_exchange_by_routing_key(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    ex = tenant_exchange(raw, rabbitmq_url, q, "topic")
    with workq.connect(rabbitmq_url) as broker:
        p = broker.producer()
        mid = p.publish(
            None, {"n": 1}, exchange=ex, routing_key="tenant.acme", headers={"trace": "t1"}
        )
        with broker.consumer(q, tenants=["acme"]) as c:
            d = c.get(timeout=WAIT)
            assert d is not None
            assert (d.id, d.tenant, d.json(), d.headers["trace"]) == (mid, "acme", {"n": 1}, "t1")
            d.ack()
        other = p.publish(None, "for globex", exchange=ex, routing_key="tenant.globex", priority=3)
        _, props, body = raw_get(raw, f"{q}.t.globex")
        assert (body, props.message_id, props.priority) == (b"for globex", other, 3)
        assert props.content_type == "text/plain; charset=utf-8" and props.delivery_mode == 2
        with pytest.raises(workq.PublishError, match="no queue is bound to exchange"):
            p.publish(None, b"lost?", exchange=ex, routing_key="tenant.nobody")
        with pytest.raises(workq.PublishError, match="does not exist"):
            p.publish(None, b"x", exchange=f"{q}.missing", routing_key="acme")
        # The producer carries on after both refusals.
        p.publish(None, b"after", exchange=ex, routing_key="tenant.globex")
    assert raw_get(raw, f"{q}.t.globex")[2] == b"after"
    # The refused messages went nowhere.
    assert raw.channel().queue_declare(f"{q}.t.globex", passive=True).method.message_count == 0


def test_aio_publishes_through_an_exchange_alike(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    ex = tenant_exchange(raw, rabbitmq_url, q, "direct")

    async def run() -> tuple[str, str]:
        async with await workq.aio.connect(rabbitmq_url) as broker:
            async with broker.producer() as p:
                mid = await p.publish(None, {"n": 2}, exchange=ex, routing_key="acme")
                with pytest.raises(workq.PublishError, match="no queue is bound to exchange"):
                    await p.publish(None, b"lost?", exchange=ex, routing_key="nobody")
                with pytest.raises(workq.PublishError, match="does not exist"):
                    await p.publish(None, b"x", exchange=f"{q}.missing", routing_key="acme")
                await p.publish(None, b"after", exchange=ex, routing_key="globex")
            async with broker.consumer(q, tenants=["acme"]) as c:
                d = await c.get(timeout=WAIT)
                assert d is not None and (d.json(), d.tenant) == ({"n": 2}, "acme")
                await d.ack()
                return d.id, mid

    got, mid = asyncio.run(run())
    assert got == mid
    assert raw_get(raw, f"{q}.t.globex")[2] == b"after"


def test_routed_publishes_go_through_middleware(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    raw.channel().queue_declare(q, durable=True)
    seen: list[tuple[str, str | None]] = []

    class Origin(workq.Middleware):
        def before_publish(self, ctx: workq.PublishContext) -> None:
            for msg in ctx.messages:
                msg.headers["x-origin"] = "billing"

        def after_publish(self, ctx: workq.PublishContext) -> None:
            seen.append((ctx.queue, type(ctx.error).__name__ if ctx.error else None))

    with workq.connect(rabbitmq_url, middleware=[Origin()]) as broker:
        p = broker.producer()
        p.publish(None, b"via default exchange", exchange="", routing_key=q)
        with pytest.raises(workq.PublishError):
            p.publish(None, b"nowhere", exchange="", routing_key=f"{q}.missing")
    _, props, body = raw_get(raw, q)
    assert (body, props.headers["x-origin"]) == (b"via default exchange", "billing")
    assert seen == [("", None), ("", "PublishError")]


def test_exchange_arguments_are_checked_before_any_io(rabbitmq_url: str) -> None:
    with workq.connect(rabbitmq_url) as broker:
        p = broker.producer()
        with pytest.raises(ValueError, match="names both a queue and an exchange"):
            p.publish("q", b"x", exchange="tenants", routing_key="acme")
        with pytest.raises(ValueError, match="needs exchange"):
            p.publish("q", b"x", routing_key="acme")
        with pytest.raises(ValueError, match="delay"):
            p.publish(None, b"x", exchange="tenants", routing_key="acme", delay=1.0)
        with pytest.raises(ValueError, match="not an exchange name"):
            p.publish(None, b"x", exchange="bad name", routing_key="acme")
        with pytest.raises(workq.ConfigurationError, match="needs exchange"):
            p.publish(None, b"x")


def test_failed_declaration_leaves_nothing_behind(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    holder = raw.channel()
    holder.queue_declare(q, exclusive=True)  # another connection's: RESOURCE_LOCKED
    with workq.connect(rabbitmq_url) as broker, pytest.raises(workq.WorkqError):
        broker.declare(q)
    assert not exists(raw, "exchange", f"workq.{q}")
    assert not exists(raw, "queue", f"{q}.dlq")
    assert not exists(raw, "queue", f"{q}.meta")


def test_both_twins_route_every_kind_of_message_identically(rabbitmq_url: str, raw: Any) -> None:
    """The sync and aio drivers publish, delay and dead-letter through one routing rule:
    a plain consumer sees the same exchange, routing key and properties from each."""
    q = unique()
    seen: dict[str, list[tuple[str, str, Any, Any]]] = {}

    def look(queue: str) -> tuple[str, str, Any, Any]:
        method, props, _ = raw_get(raw, queue)
        return method.exchange, method.routing_key, props.content_type, props.priority

    lane = f"{q}.t.acme.p2"
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q, max_priority=3)
        p = broker.producer()
        p.publish(q, "x", tenant="acme", priority=2)
        seen["sync"] = [look(lane)]
        p.publish(q, "x", tenant="acme", priority=2)
        with broker.consumer(q) as c:
            d = c.get(timeout=WAIT)
            assert d is not None
            d.reject("sync")
        seen["sync"].append(look(f"{q}.dlq"))

    async def aio() -> None:
        async with await workq.aio.connect(rabbitmq_url) as broker:
            async with broker.producer() as p:
                await p.publish(q, "x", tenant="acme", priority=2)
                seen["aio"] = [look(lane)]
                await p.publish(q, "x", tenant="acme", priority=2)
            async with broker.consumer(q) as c:
                d = await c.get(timeout=WAIT)
                assert d is not None
                await d.reject("aio")
            seen["aio"].append(look(f"{q}.dlq"))

    asyncio.run(aio())
    assert seen["sync"] == seen["aio"]
    assert [s[:2] for s in seen["sync"]] == [
        (f"workq.{q}", "acme.p2"),
        (f"workq.{q}.dlx", "acme.p2"),
    ]


def test_queue_prefix_names_every_object(rabbitmq_url: str, raw: Any) -> None:
    q = unique()
    sep = "&" if "?" in rabbitmq_url else "?"
    with workq.connect(f"{rabbitmq_url}{sep}queue_prefix=team.") as broker:
        broker.producer().publish(q, "prefixed")
        assert exists(raw, "queue", f"team.{q}") and not exists(raw, "queue", q)
        assert exists(raw, "exchange", f"workq.team.{q}")
        assert get_one(broker, q).text() == "prefixed"
