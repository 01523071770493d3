"""Consumer and worker behaviour beyond the conformance suite, on memory://."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import workq
from workq.testing.conformance import until


def test_consumer_iterates_until_closed_from_another_thread() -> None:
    with workq.connect("memory://") as broker:
        broker.producer().publish_many("q", ["a", "b"])
        c = broker.consumer("q", prefetch=5)
        got: list[str] = []

        def consume() -> None:
            for d in c:
                got.append(d.text())
                d.ack()

        t = threading.Thread(target=consume)
        t.start()
        until(lambda: len(got) == 2, what="both")
        c.close()
        t.join(5)
        assert not t.is_alive() and got == ["a", "b"]
        with pytest.raises(workq.Closed):
            c.get(timeout=0.1)
        c.close()  # idempotent


def test_message_delivered_past_max_attempts_is_dead_lettered() -> None:
    # A consumer that dies without settling (here: releases via lease expiry) keeps
    # redelivering; past max_attempts the core dead-letters instead of handing it out.
    with workq.connect("memory://") as broker:
        broker.declare("q", max_attempts=2, lease=0.2)
        broker.producer().publish("q", "crashes consumers")
        for _ in range(2):
            c = broker.consumer("q")
            assert c.get(timeout=5) is not None
            c._state.gate.closed = True  # abandon without releasing, as a crash would
        with broker.consumer("q") as c:
            assert c.get(timeout=1.0) is None
        (dead,) = until(lambda: broker.dead_letters("q"), what="dead letter")
        assert "delivered 3 times" in dead.reason


def test_dead_letter_false_drops_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with workq.connect("memory://") as broker:
        broker.declare("q", dead_letter=False)
        broker.producer().publish("q", "x")
        with broker.consumer("q") as c:
            d = c.get(timeout=1)
            assert d is not None
            d.reject("bad")
        assert broker.dead_letters("q") == []
        assert "dead_letter=False" in caplog.text


def test_lease_is_extended_while_held() -> None:
    with workq.connect("memory://") as broker:
        broker.declare("q", lease=0.3)
        broker.producer().publish("q", "long job")
        with broker.consumer("q") as c, broker.consumer("q") as other:
            d = c.get(timeout=1)
            assert d is not None
            # Several leases pass; the keeper extends it, so the other never sees it.
            assert other.get(timeout=1.2) is None
            d.ack()


def test_stats_and_spec_adoption() -> None:
    with workq.connect("memory://shared-stats") as a, workq.connect("memory://shared-stats") as b:
        a.declare("q", max_attempts=7)
        assert b.spec("q").max_attempts == 7  # first use adopts the declared spec
        b.producer().publish_many(
            "q", [workq.Message("x", tenant="t", priority=2), "y", workq.Message("z", delay=60)]
        )
        stats = a.stats("q")
        assert (stats.ready, stats.in_flight, stats.delayed, stats.dead_letters) == (2, 0, 1, 0)
        assert {(s.lane.tenant, s.lane.priority) for s in stats.lanes} == {("t", 2), (None, 0)}
        with pytest.raises(workq.ConfigurationError, match="options"):
            a.declare("other", colour="blue")


def test_argument_errors() -> None:
    with workq.connect("memory://") as broker:
        with pytest.raises(ValueError, match="prefetch"):
            broker.consumer("q", prefetch=0)
        with pytest.raises(TypeError, match="list of tenant names"):
            broker.consumer("q", tenants="acme")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="concurrency"):
            broker.worker("q", print, concurrency=0)
        with pytest.raises(ValueError, match="prefetch"):
            broker.worker("q", print, concurrency=4, prefetch=2)
        with pytest.raises(ValueError, match="shutdown_timeout"):
            broker.worker("q", print, shutdown_timeout=-1)
        with pytest.raises(workq.ConfigurationError, match="queue names"):
            broker.producer().publish("bad queue", "x")
        with pytest.raises(ValueError, match="priority"):
            broker.producer().publish("q", "x", priority=99)


def test_worker_stops_on_sigterm_and_releases() -> None:
    script = textwrap.dedent(
        """
        import sys, time, workq
        broker = workq.connect("memory://")
        broker.producer().publish_many("q", [str(i) for i in range(3)])
        def handle(d):
            print("started", flush=True)
            time.sleep(0.5)
        worker = broker.worker("q", handle, concurrency=1, prefetch=3)
        worker.run()
        stats = broker.stats("q")
        print("stopped", worker.processed, stats.ready, stats.in_flight, flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    # The started job finished; the two prefetched ones went back at once.
    assert out.split()[-4:] == ["stopped", "1", "2", "0"]


def test_worker_runs_off_the_main_thread() -> None:
    with workq.connect("memory://") as broker:
        seen: list[str] = []
        worker = broker.worker("q", lambda d: seen.append(d.text()), concurrency=2)
        t = threading.Thread(target=worker.run)
        t.start()
        assert worker.wait_running()
        broker.producer().publish("q", "hi")
        until(lambda: seen == ["hi"], what="handled")
        worker.stop()
        t.join(10)
        assert not worker.running


def test_async_consumer_iteration_and_cancelled_get() -> None:
    async def main() -> list[str]:
        async with await workq.aio.connect("memory://") as broker:
            c = await broker.consumer("q", prefetch=2)
            # A get cancelled mid-wait loses nothing that arrives afterwards.
            task = asyncio.create_task(c.get(timeout=5))
            await asyncio.sleep(0.05)
            task.cancel()
            await broker.producer().publish_many("q", ["a", "b"])
            got = []
            async for d in c:
                got.append(d.text())
                await d.ack()
                if len(got) == 2:
                    break
            await c.close()
            with pytest.raises(workq.Closed):
                await c.get(timeout=0.1)
            return got

    assert asyncio.run(main()) == ["a", "b"]


def test_async_worker_stop_from_another_thread() -> None:
    async def main() -> int:
        async with await workq.aio.connect("memory://") as broker:
            await broker.producer().publish("q", "x")
            done = asyncio.Event()

            async def handle(d: workq.aio.Delivery) -> None:
                done.set()

            worker = broker.worker("q", handle, concurrency=1, shutdown_timeout=0.1)
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), 10)
            threading.Thread(target=worker.stop).start()
            # The stop from a foreign thread must end run(): wait_for fails the test if not.
            await asyncio.wait_for(task, 10)
            return worker.processed

    assert asyncio.run(main()) == 1


def test_worker_counts_handlers_that_settle_their_own_delivery() -> None:
    with workq.connect("memory://") as broker:
        broker.producer().publish_many("q", ["a", "b"])
        worker = broker.worker("q", lambda d: d.ack(), concurrency=2)
        t = threading.Thread(target=worker.run)
        t.start()
        until(lambda: worker.processed == 2, what="both counted")
        worker.stop()
        t.join(10)
        stats = broker.stats("q")
        assert (stats.ready, stats.in_flight, stats.dead_letters) == (0, 0, 0)


def test_over_delivered_message_follows_dead_letter_false() -> None:
    # The poison rule settles through the same path as reject, so dead_letter=False
    # drops it (with a warning) instead of filling a dead-letter queue nobody reads.
    with workq.connect("memory://") as broker:
        broker.declare("q", max_attempts=1, lease=0.2, dead_letter=False)
        broker.producer().publish("q", "crashes consumers")
        c = broker.consumer("q")
        assert c.get(timeout=5) is not None
        c._state.gate.closed = True  # abandon without releasing, as a crash would
        with broker.consumer("q") as c2:
            assert c2.get(timeout=1.0) is None
        assert broker.dead_letters("q") == []
        stats = broker.stats("q")
        assert (stats.ready, stats.in_flight) == (0, 0)
