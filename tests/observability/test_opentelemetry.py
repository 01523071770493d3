"""A producer's trace continues in the consumer's span, on every backend, sync and aio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import workq
from workq.contrib.opentelemetry import OpenTelemetry
from workq.testing.conformance import WAIT, unique, until


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    provider.shutdown()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("sqs", marks=pytest.mark.sqs),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://{unique('otel')}"
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'otel.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


SYSTEMS = {
    "memory": "workq.memory",
    "sqlite": "workq.sqlite",
    "amqp": "rabbitmq",
    "sqs": "aws_sqs",
    "kafka": "kafka",
}


def check_trace(exp: InMemorySpanExporter, q: str, mid: str, backend: str) -> None:
    spans = until(
        lambda: [s for s in exp.get_finished_spans() if s.name == f"process {q}"] or None,
        what="the process span",
    )
    (send,) = [s for s in exp.get_finished_spans() if s.name == f"send {q}"]
    (process,) = spans
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    attrs = dict(process.attributes or {})
    assert attrs["messaging.destination.name"] == q
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.message.id"] == mid
    assert attrs["workq.tenant"] == "acme"
    assert attrs["workq.attempt"] == 1
    assert attrs["workq.outcome"] == "ack"
    assert attrs["messaging.system"] == SYSTEMS[backend]
    sent = dict(send.attributes or {})
    assert sent["messaging.operation.type"] == "send" and sent["messaging.message.id"] == mid
    # A span the handler makes is a child of the process span.
    (inner,) = [s for s in exp.get_finished_spans() if s.name == "inside the handler"]
    assert inner.parent is not None and inner.parent.span_id == process.context.span_id


def test_trace_continues_from_producer_to_consumer(
    url: str, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    otel = OpenTelemetry(tracer_provider=provider)
    tracer = provider.get_tracer("test")
    q = unique()

    # sync
    with workq.connect(url, middleware=[otel]) as broker:
        mid = broker.producer().publish(q, {"n": 1}, tenant="acme")
        seen: list[str] = []

        def handle(d: workq.Delivery) -> None:
            assert d.headers.get("traceparent")
            with tracer.start_as_current_span("inside the handler"):
                seen.append(d.id)

        worker = broker.worker(q, handle, concurrency=1)
        t = threading.Thread(target=worker.run)
        t.start()
        try:
            until(lambda: seen, what="the delivery", timeout=WAIT)
            until(lambda: worker.processed == 1, what="processing to finish")
        finally:
            worker.stop()
            t.join(30)
    check_trace(exp, q, mid, url.split(":")[0])
    exp.clear()

    # aio, same middleware object
    q2 = unique()

    async def main() -> str:
        async with await workq.aio.connect(url, middleware=[otel]) as broker:
            async with broker.producer() as p:
                mid = await p.publish(q2, {"n": 2}, tenant="acme")
            done = asyncio.Event()

            async def handle(d: workq.aio.Delivery) -> None:
                with tracer.start_as_current_span("inside the handler"):
                    done.set()

            worker = broker.worker(q2, handle)
            run = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), WAIT)
            while worker.processed < 1:
                assert not run.done(), "the worker ended early"
                await asyncio.sleep(0.02)
            worker.stop()
            await asyncio.wait_for(run, 30)
            return mid

    mid2 = asyncio.run(main())
    check_trace(exp, q2, mid2, url.split(":")[0])


def test_batches_failures_and_settlement_events(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exp, provider = exporter
    otel = OpenTelemetry(tracer_provider=provider)
    q = unique()
    with workq.connect("memory://", middleware=[otel]) as broker:
        broker.declare(q, max_attempts=1)
        ids = broker.producer().publish_many(q, ["fails", "ok"])

        def handle(d: workq.Delivery) -> None:
            if d.text() == "fails":
                raise KeyError("boom")

        worker = broker.worker(q, handle)
        t = threading.Thread(target=worker.run)
        t.start()
        try:
            until(lambda: worker.processed == 2, what="both")
        finally:
            worker.stop()
            t.join(10)
    (send,) = [s for s in exp.get_finished_spans() if s.name == f"send {q}"]
    assert (send.attributes or {})["messaging.batch.message_count"] == 2
    processes = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in exp.get_finished_spans()
        if s.name == f"process {q}"
    }
    failed, ok = processes[ids[0]], processes[ids[1]]
    assert failed.parent is not None and failed.parent.span_id == send.context.span_id
    assert not failed.status.is_ok and (failed.attributes or {})["workq.outcome"] == "dead_letter"
    assert [e.name for e in failed.events] == ["settle", "exception"]
    settle = dict(failed.events[0].attributes or {})
    assert settle["workq.outcome"] == "dead_letter" and "KeyError" in str(settle["workq.reason"])
    assert ok.status.is_ok and [e.name for e in ok.events] == ["settle"]


def test_a_failed_publish_ends_its_span_with_the_error(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exp, provider = exporter
    from .flaky import flaky

    broker, switch = flaky("memory://", middleware=[OpenTelemetry(tracer_provider=provider)])
    with broker:
        broker.declare("q")
        switch.down()
        with pytest.raises(workq.BrokerUnavailable):
            broker.producer().publish("q", "x")
    (send,) = exp.get_finished_spans()
    assert not send.status.is_ok and send.events[0].name == "exception"
