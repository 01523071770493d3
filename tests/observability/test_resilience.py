"""Workers ride out broker outages: a driver made unreachable on demand (memory and
SQLite underneath), and a real RabbitMQ node restart under ``workq run``."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import workq
from workq.health import serve
from workq.testing.conformance import unique, until

from .flaky import flaky, flaky_async


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    records = [r for r in caplog.records if r.name == "workq"]
    lost = [r for r in records if "connection lost" in r.getMessage()]
    back = [r for r in records if "connection back" in r.getMessage()]
    assert all(r.levelno == logging.WARNING for r in lost)
    assert all(r.levelno == logging.INFO for r in back)
    return len(lost), len(back)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://{unique('outage')}"
    return f"sqlite://{tmp_path / 'outage.db'}"


def test_sync_worker_rides_out_an_outage(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workq")
    q = unique()
    broker, switch = flaky(url)
    done: set[str] = set()
    with broker, workq.connect(url) as direct:
        direct.declare(q, lease=1.0)
        direct.producer().publish_many(q, [f"a{i}" for i in range(5)])

        def handle(d: workq.Delivery) -> None:
            done.add(d.text())

        worker = broker.worker(q, handle, concurrency=2)
        t = threading.Thread(target=worker.run)
        t.start()
        with serve(0, [worker], metrics=False) as server:
            try:
                until(lambda: len(done) == 5 and worker.connected, what="first batch")
                assert status(server.port, "/readyz") == 200
                switch.down()
                until(lambda: not worker.connected, what="the outage to be noticed")
                until(lambda: switch.refused >= 3, what="several reconnect attempts")
                assert status(server.port, "/readyz") == 503
                assert status(server.port, "/livez") == 200
                direct.producer().publish_many(q, [f"b{i}" for i in range(5)])
                switch.up()
                until(lambda: worker.connected, what="the worker to reconnect")
                until(lambda: len(done) == 10, what="what was published during the outage")
                assert status(server.port, "/readyz") == 200
            finally:
                worker.stop()
                t.join(10)
            assert not t.is_alive()
            assert status(server.port, "/readyz") == 503  # stopped
    assert outage_lines(caplog) == (1, 1)


def test_stop_works_while_disconnected_and_max_outage_bounds_it() -> None:
    broker, switch = flaky("memory://")
    with broker:
        switch.down()
        worker = broker.worker("q", lambda d: None)
        t = threading.Thread(target=worker.run)
        t.start()
        until(lambda: switch.refused >= 2, what="reconnect attempts")
        assert t.is_alive() and not worker.connected
        worker.stop()
        t.join(10)
        assert not t.is_alive()

        bounded = broker.worker("q", lambda d: None, max_outage=0.3)
        with pytest.raises(workq.BrokerUnavailable, match=r"max_outage=0\.3s"):
            bounded.run()


def test_async_worker_rides_out_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workq")
    url = f"memory://{unique('aio-outage')}"
    q = unique()

    async def main() -> set[str]:
        broker, switch = flaky_async(url)
        done: set[str] = set()
        async with broker:
            with workq.connect(url) as direct:
                direct.declare(q, lease=1.0)
                direct.producer().publish_many(q, [f"a{i}" for i in range(5)])

                async def handle(d: workq.aio.Delivery) -> None:
                    done.add(d.text())

                worker = broker.worker(q, handle)
                run = asyncio.create_task(worker.run())

                async def until_async(check: object, what: str) -> None:
                    deadline = time.monotonic() + 30
                    while not check():  # type: ignore[operator]
                        assert time.monotonic() < deadline, f"timed out waiting for {what}"
                        await asyncio.sleep(0.02)

                await until_async(lambda: len(done) == 5 and worker.connected, "first batch")
                switch.down()
                await until_async(lambda: not worker.connected, "the outage")
                await until_async(lambda: switch.refused >= 3, "reconnect attempts")
                assert not run.done()
                direct.producer().publish_many(q, [f"b{i}" for i in range(5)])
                switch.up()
                await until_async(lambda: len(done) == 10, "the rest")
                assert worker.connected

                # Stop works while disconnected too.
                switch.down()
                await until_async(lambda: not worker.connected, "the second outage")
                worker.stop()
                await asyncio.wait_for(run, 10)
                switch.up()
        return done

    assert len(asyncio.run(main())) == 10
    lost, back = outage_lines(caplog)
    assert (lost, back) == (2, 1)
