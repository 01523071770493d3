"""Prometheus metrics and the HTTP endpoints, in process and under ``workq run``."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

import workq
from workq.contrib.prometheus import Prometheus
from workq.health import serve
from workq.testing.conformance import unique, until

from .test_resilience import status


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_metrics_count_publish_outcomes_duration_and_queue_depth() -> None:
    reg = CollectorRegistry()
    prom = Prometheus(reg, max_tenants=2, stats_interval=0.05)
    q = unique()
    with workq.connect("memory://", middleware=[prom]) as broker:
        broker.declare(q, max_attempts=2)
        with broker.producer() as p:
            p.publish(q, "ok", tenant="a")
            p.publish(q, "retry", tenant="b")
            p.publish_many(q, [workq.Message("reject", tenant="c"), "ok"])
        assert value(reg, "workq_messages_published_total", queue=q, tenant="a") == 1
        assert value(reg, "workq_messages_published_total", queue=q, tenant="other") == 1
        assert value(reg, "workq_messages_published_total", queue=q, tenant="") == 1

        def handle(d: workq.Delivery) -> None:
            if d.text() == "retry":
                raise workq.Retry(delay=0.01)
            if d.text() == "reject":
                raise workq.Reject("no")

        worker = broker.worker(q, handle, concurrency=1)
        t = threading.Thread(target=worker.run)
        t.start()
        try:
            until(lambda: worker.processed == 5, what="all processed")
            until(
                lambda: value(reg, "workq_dead_letters", queue=q) == 2,
                what="the stats refresh",
            )
            assert value(reg, "workq_queue_ready", queue=q, tenant="a") == 0
        finally:
            worker.stop()
            t.join(10)

    def processed(tenant: str, outcome: str) -> float:
        return value(reg, "workq_messages_processed_total", queue=q, tenant=tenant, outcome=outcome)

    assert processed("a", "ack") == 1 and processed("", "ack") == 1
    assert processed("b", "retry") == 1 and processed("b", "dead_letter") == 1
    assert processed("other", "dead_letter") == 1
    assert value(reg, "workq_handler_duration_seconds_count", queue=q, tenant="b") == 2
    assert value(reg, "workq_in_flight", queue=q, tenant="a") == 0


def test_metrics_and_health_served_over_http() -> None:
    reg = CollectorRegistry()
    prom = Prometheus(reg)
    with workq.connect("memory://", middleware=[prom]) as broker:
        broker.producer().publish("q", "x")
        worker = broker.worker("q", lambda d: None)
        with serve(0, [worker], registry=reg) as both, serve(0, [], health=False) as metrics:
            assert status(both.port, "/readyz") == 503  # not started yet
            t = threading.Thread(target=worker.run)
            t.start()
            try:
                until(lambda: worker.connected and worker.processed == 1, what="processed")
                assert status(both.port, "/readyz") == 200
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{both.port}/metrics") as r:
                    text = r.read().decode()
                assert 'workq_messages_processed_total{outcome="ack",queue="q",tenant=""} 1.0' in (
                    text
                )
                assert status(metrics.port, "/readyz") == 404
                assert status(metrics.port, "/metrics") == 200
                assert status(both.port, "/nothing") == 404
            finally:
                worker.stop()
                t.join(10)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="max_tenants"):
        Prometheus(max_tenants=-1)
    with pytest.raises(ValueError, match="stats_interval"):
        Prometheus(stats_interval=0)


def test_async_worker_refreshes_queue_gauges_and_bounds_outages() -> None:
    import asyncio

    from .flaky import flaky_async

    reg = CollectorRegistry()
    q = unique()

    async def main() -> None:
        broker, switch = flaky_async("memory://", middleware=[Prometheus(reg, stats_interval=0.05)])
        async with broker:
            async with broker.producer() as p:
                await p.publish_many(q, ["a", "b"])

            async def handle(d: workq.aio.Delivery) -> None:
                await d.reject("no")  # settled by the handler itself

            worker = broker.worker(q, handle)
            run = asyncio.create_task(worker.run())
            while value(reg, "workq_dead_letters", queue=q) < 2:
                assert not run.done()
                await asyncio.sleep(0.02)
            switch.down()
            bounded = broker.worker(q, handle, max_outage=0.2)
            with pytest.raises(workq.BrokerUnavailable, match="max_outage"):
                await bounded.run()
            worker.stop()
            await asyncio.wait_for(run, 10)
            switch.up()
            assert worker.settled["dead_letter"] == 2 and worker.processed == 2

    asyncio.run(main())
    assert (
        value(reg, "workq_messages_processed_total", queue=q, tenant="", outcome="dead_letter") == 2
    )
