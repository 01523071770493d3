"""SQS outages through a TCP fault proxy, and an endpoint that restarts empty.

What the driver owes the worker (which reconnects by reopening its consumer): calls fail
within their bounds with ``BrokerUnavailable``/``PublishError`` while SQS is unreachable,
the next call after it is back works on the same broker object, nothing confirmed is
lost, and lane queues that vanished with the endpoint's state are declared again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import workq
from workq.testing.brokers.sqs import start_local, url_for
from workq.testing.conformance import WAIT, unique, until, with_query
from workq.testing.faults import FaultProxy

pytestmark = [pytest.mark.sqs, pytest.mark.slow]

#: Small bounds so that the tests see them hold; the defaults are 30 s and 10 s.
BOUNDS = "publish_timeout=4&connect_timeout=1"
#: What a bound may overrun by on a loaded machine (thread wake-ups, a slow moto).
SLACK = 3.0


def _port(url: str) -> int:
    endpoint = parse_qs(urlsplit(url).query)["endpoint_url"][0]
    port = urlsplit(endpoint).port
    assert port is not None
    return port


@pytest.fixture
def proxy(sqs_url: str) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", _port(sqs_url)) as p:
        yield p


@pytest.fixture
def proxied_url(proxy: FaultProxy) -> str:
    return with_query(url_for(f"http://127.0.0.1:{proxy.port}"), BOUNDS)


def timed(fn: object) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()  # type: ignore[operator]
    except workq.WorkqError as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


@pytest.mark.parametrize("fault", ["black_hole", "drop", "stall"])
def test_calls_fail_within_their_bounds_and_the_next_call_recovers(
    proxied_url: str, proxy: FaultProxy, fault: str
) -> None:
    queue = unique("o")
    with workq.connect(proxied_url) as broker:
        broker.declare(queue)
        producer = broker.producer()
        confirmed = [producer.publish(queue, "before")]
        with broker.consumer(queue) as consumer:
            getattr(proxy, fault)()
            during = f"during-{queue}"
            took, error = timed(lambda: producer.publish(queue, "during", message_id=during))
            assert isinstance(error, workq.PublishError), error
            assert took <= 4.0 + SLACK, f"publish took {took:.1f}s, bound 4s"
            took, error = timed(lambda: consumer.get(timeout=1.0))
            assert isinstance(error, workq.BrokerUnavailable), error
            # get(1.0): the long poll's read timeout (1 + 3 s) plus one connect (1 s).
            assert took <= 1.0 + 3.0 + 1.0 + 2.0 + SLACK, f"get took {took:.1f}s"
            proxy.restore()
            confirmed.append(producer.publish(queue, "after"))
            got: list[str] = []

            def both() -> bool:
                d = consumer.get(timeout=1.0)
                if d is not None:
                    d.ack()
                    got.append(d.id)
                return set(confirmed) <= set(got)

            until(both, what="both confirmed messages after the outage")
    # A stalled request is delivered when traffic flows again, so the unconfirmed
    # "during" message may be there too (at least once); nothing else may.
    assert set(got) - set(confirmed) <= {during}


def test_outage_under_a_running_producer_and_consumer_loses_nothing_confirmed(
    proxied_url: str, proxy: FaultProxy
) -> None:
    """The endpoint goes away for a while (reset connections, then silence) and comes
    back with its state: everything confirmed is consumed; the consumer loop, calling
    again after each BrokerUnavailable as a worker does, keeps going."""
    queue = unique("o")
    confirmed: list[str] = []
    consumed: set[str] = set()
    failures = {"publish": 0, "get": 0}
    stop = threading.Event()
    with workq.connect(proxied_url) as broker:
        broker.declare(queue, lease=5.0)

        def produce() -> None:
            producer = broker.producer()
            i = 0
            while not stop.is_set():
                try:
                    confirmed.append(producer.publish(queue, f"m{i}"))
                except workq.PublishError:
                    failures["publish"] += 1
                i += 1
                time.sleep(0.05)

        def consume() -> None:
            with broker.consumer(queue, prefetch=5) as c:
                while not stop.is_set() or not set(confirmed) <= consumed:
                    try:
                        d = c.get(timeout=1.0)
                    except workq.BrokerUnavailable:
                        failures["get"] += 1
                        continue
                    if d is not None:
                        consumed.add(d.id)
                        d.ack()

        threads = [threading.Thread(target=f, daemon=True) for f in (produce, consume)]
        for t in threads:
            t.start()
        until(lambda: len(consumed) >= 5, what="traffic before the outage")
        proxy.drop()
        until(lambda: failures["publish"] >= 1, what="a publish to fail during the drop")
        proxy.black_hole()
        until(lambda: failures["get"] >= 1, what="a receive to fail during the black hole")
        proxy.restore()
        mark = len(confirmed)
        until(lambda: len(confirmed) >= mark + 5, what="publishing to resume")
        stop.set()
        for t in threads:
            t.join(WAIT * 2)
        assert not any(t.is_alive() for t in threads)
    lost = set(confirmed) - consumed
    assert not lost, f"{len(lost)} confirmed messages lost"


def test_an_endpoint_restarted_empty_gets_its_lanes_declared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint restarts without its queues (moto keeps none): the producer declares
    the lanes again (one warning each), the consumer finds them and carries on."""
    server = start_local(tmp_path / "a")
    port = _port(server.url)
    queue = unique("o")
    try:
        with workq.connect(with_query(server.url, BOUNDS)) as broker:
            producer = broker.producer()
            producer.publish(queue, "before")
            producer.publish(queue, "before", tenant="acme")
            with broker.consumer(queue, prefetch=2) as c:
                seen: list[str] = []

                def take(n: int) -> bool:
                    try:
                        d = c.get(timeout=1.0)
                    except workq.BrokerUnavailable:
                        return False
                    if d is not None:
                        seen.append(d.text())
                        d.ack()
                    return len(seen) >= n

                until(lambda: take(2), what="the messages before the restart")
                server.stop()
                server = start_local(tmp_path / "b", port=port)
                with caplog.at_level("WARNING", logger="workq.sqs"):
                    producer.publish(queue, "after")
                    producer.publish(queue, "after", tenant="acme")
                    producer.publish(queue, "after again", tenant="acme")
                vanished = [r for r in caplog.records if "vanished" in r.message]
                assert len(vanished) == 2
                until(lambda: take(5), what="the messages after the restart")
        assert sorted(seen) == ["after", "after", "after again", "before", "before"]
    finally:
        server.stop()


def test_async_calls_fail_within_their_bounds_and_recover(
    proxied_url: str, proxy: FaultProxy
) -> None:
    async def main() -> None:
        queue = unique("o")
        async with await workq.aio.connect(proxied_url) as broker:
            await broker.declare(queue)
            async with broker.producer() as producer:
                confirmed = [await producer.publish(queue, "before")]
                async with broker.consumer(queue) as consumer:
                    proxy.black_hole()
                    start = time.monotonic()
                    with pytest.raises(workq.PublishError):
                        await producer.publish(queue, "during")
                    assert time.monotonic() - start <= 4.0 + SLACK
                    with pytest.raises(workq.BrokerUnavailable):
                        await consumer.get(timeout=1.0)
                    proxy.restore()
                    confirmed.append(await producer.publish(queue, "after"))
                    got: list[str] = []
                    deadline = time.monotonic() + WAIT
                    while len(got) < 2 and time.monotonic() < deadline:
                        d = await consumer.get(timeout=1.0)
                        if d is not None:
                            await d.ack()
                            got.append(d.id)
                    assert sorted(got) == sorted(confirmed)

    asyncio.run(main())
