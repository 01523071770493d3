"""Fault tests on a real SQS server: long handlers, killed and stopped worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import WAIT, until

pytestmark = [pytest.mark.sqs, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("worker_proc.py")


def spawn(url: str, queue: str, mode: str, marker: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, queue, mode, str(marker)],
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def started(marker: Path, n: int = 1) -> list[str]:
    if not marker.exists():
        return []
    ids = marker.read_text().split()
    return ids if len(ids) >= n else []


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def test_handler_longer_than_visibility_keeps_its_message(broker: workq.Broker, queue: str) -> None:
    """A handler running 3x the visibility timeout is not redelivered and is deleted after."""
    lease = 2.0
    broker.declare(queue, lease=lease)
    mid = broker.producer().publish(queue, "long job")
    calls: list[tuple[str, int]] = []

    def handle(d: workq.Delivery) -> None:
        calls.append((d.id, d.attempt))
        time.sleep(3 * lease)  # the work itself, outlasting the visibility timeout

    # Two free slots: had the lease lapsed, the redelivery would be taken by the other.
    worker = broker.worker(queue, handle, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        until(lambda: worker.processed >= 1, what="the long handler to finish")
    finally:
        worker.stop()
        thread.join(WAIT)
    assert calls == [(mid, 1)]

    def empty() -> bool:
        stats = broker.stats(queue)
        return stats.ready == 0 and stats.in_flight == 0

    until(empty, what="the message to be deleted")
    with broker.consumer(queue) as c:
        assert c.get(timeout=lease + 1.0) is None


def test_killed_worker_message_is_processed_by_another(
    broker: workq.Broker, queue: str, sqs_url: str, tmp_path: Path
) -> None:
    """SIGKILL: the message comes back after the visibility timeout to another worker."""
    broker.declare(queue, lease=3.0)
    mid = broker.producer().publish(queue, "survives a crash")
    marker = tmp_path / "started"
    proc = spawn(sqs_url, queue, "hang", marker)
    try:
        assert until(lambda: started(marker), what="the first worker to start") == [mid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
    finally:
        stop_proc(proc)
    seen: list[tuple[str, int]] = []
    worker = broker.worker(queue, lambda d: seen.append((d.id, d.attempt)), concurrency=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        until(lambda: seen, what="another worker to process the message")
    finally:
        worker.stop()
        thread.join(WAIT)
    assert seen == [(mid, 2)]


def test_sigterm_releases_prefetched_messages_at_once(
    broker: workq.Broker, queue: str, sqs_url: str, tmp_path: Path
) -> None:
    """SIGTERM: unstarted prefetched messages are visible again now, not after the lease."""
    # Far longer than the bounded wait below: only a release can bring them back in time.
    broker.declare(queue, lease=120.0)
    ids = broker.producer().publish_many(queue, [f"job {i}" for i in range(4)])
    marker = tmp_path / "started"
    proc = spawn(sqs_url, queue, "prefetch", marker)
    try:
        until(lambda: started(marker), what="the worker to start a handler")
        until(lambda: broker.stats(queue).in_flight == 4, what="all 4 to be prefetched")
        proc.send_signal(signal.SIGTERM)
        with broker.consumer(queue, prefetch=4) as c:
            back: list[str] = []
            attempts: list[int] = []
            deadline = time.monotonic() + WAIT
            while len(back) < 3 and time.monotonic() < deadline:
                d = c.get(timeout=1.0)
                if d is not None:
                    d.ack()
                    back.append(d.id)
                    attempts.append(d.attempt)
        assert proc.wait(WAIT) == 0
    finally:
        stop_proc(proc)
    (first,) = started(marker)
    assert sorted(back) == sorted(set(ids) - {first})
    # Released by another process: still their first attempt, counted here too.
    assert attempts == [1, 1, 1]
