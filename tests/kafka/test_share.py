"""Share mode (``?mode=share``, KIP-932) semantics the conformance suite does not cover."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import WAIT, unique, until, with_query

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: A consumer that takes one delivery, writes its attempt down, and dies without a word.
CRASH = """
import os, sys, workq
url, queue, out = sys.argv[1:4]
broker = workq.connect(url)
consumer = broker.consumer(queue, prefetch=1)
d = consumer.get(timeout=60)
with open(out, "a") as f:
    f.write(f"{d.attempt if d else 0}\\n")
os._exit(1)
"""


@pytest.fixture
def share_url(kafka_url: str) -> str:
    if os.environ.get("WORKQ_TEST_KAFKA", "apache").lower() == "tansu":
        pytest.skip("Tansu has no share groups")
    # A short acquisition lock, so that crashed consumers' records come back quickly.
    return with_query(kafka_url, "mode=share&share_lock_timeout=2")


def test_share_mode_has_shared_dispatch(share_url: str) -> None:
    with workq.connect(share_url) as broker:
        assert broker.driver.capabilities.shared_dispatch


def test_message_that_crashes_every_consumer_is_dead_lettered_after_max_attempts(
    share_url: str, tmp_path: Path
) -> None:
    queue = unique("poison")
    out = tmp_path / "attempts.txt"
    with workq.connect(share_url) as broker:
        broker.declare(queue, max_attempts=2)
        broker.producer().publish(queue, "poison")
        for _ in range(2):
            subprocess.run(
                [sys.executable, "-c", CRASH, share_url, queue, str(out)],
                timeout=120,
                check=False,
            )
        # Each crash left the record acquired until its lock expired: the broker counted
        # both deliveries, so the third is past max_attempts and goes to the DLQ.
        assert out.read_text().split() == ["1", "2"]
        with broker.consumer(queue, prefetch=1) as c:
            until(lambda: broker.dead_letters(queue) or c.get(timeout=0.5), what="dead letter")
        dead = broker.dead_letters(queue)
        assert [d.body for d in dead] == [b"poison"]
        assert "consumers may be crashing" in dead[0].reason


def test_handler_longer_than_the_lock_is_redelivered_and_its_late_ack_is_harmless(
    share_url: str,
) -> None:
    queue = unique("long")
    attempts: list[int] = []
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        with lock:
            attempts.append(d.attempt)
        if d.attempt == 1:
            threading.Event().wait(4)  # twice the 2 s lock: no renewal in the client yet

    with workq.connect(share_url) as broker:
        broker.producer().publish(queue, "long")
        worker = broker.worker(queue, handle, concurrency=2, prefetch=2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.wait_running()
        until(lambda: 2 in attempts, timeout=60, what="redelivery after the lock expired")
        until(lambda: len(attempts) >= 2 and attempts[0] == 1, what="both runs")
        worker.stop()
        thread.join(WAIT)
        assert not thread.is_alive()
        with broker.consumer(queue, prefetch=1) as c:
            assert c.get(timeout=3) is None, "accepted on the second delivery, so gone"
