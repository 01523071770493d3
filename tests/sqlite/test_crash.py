"""Several processes on one file; a worker SIGKILLed mid-job loses nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import until

pytestmark = [pytest.mark.sqlite, pytest.mark.slow]

HERE = Path(__file__).parent


def lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_sigkilled_worker_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'shared.db'}"
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    n = 120
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    # Worker 0 hangs on its 3rd job; the others work normally.
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "crash_worker.py"), url, queue, str(log)]
            + (["3"] if i == 0 else [])
        )
        for i, log in enumerate(logs)
    ]
    try:
        until(lambda: all(["ready"] in lines(log) for log in logs), 30, "workers to start")
        ids_file = tmp_path / "ids.txt"
        producer = subprocess.run(
            [sys.executable, str(HERE / "crash_producer.py"), url, queue, str(ids_file), str(n)],
            timeout=60,
        )
        assert producer.returncode == 0
        published = set(ids_file.read_text().split())
        assert len(published) == n

        until(lambda: any(e[0] == "stuck" for e in lines(logs[0])), 30, "a stuck job")
        stuck = next(e[1] for e in lines(logs[0]) if e[0] == "stuck")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)

        def done() -> dict[str, list[int]]:
            seen: dict[str, list[int]] = {}
            for log in logs:
                for entry in lines(log):
                    if entry[0] == "done":
                        seen.setdefault(entry[1], []).append(int(entry[2]))
            return seen

        until(lambda: published <= set(done()), 60, "every message to be processed")
        seen = done()
        # The job the killed worker was in the middle of came back to a live worker.
        assert stuck in seen
        assert max(seen[stuck]) >= 2
        assert set(seen) == published

        # The killed worker may have finished a job without acking it: that job comes
        # back when its lease lapses and is done again; wait for the queue to drain.
        with workq.connect(url) as broker:

            def drained() -> bool:
                s = broker.stats(queue)
                return s.ready + s.in_flight == 0

            until(drained, 30, "the queue to drain")
        for proc in workers[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in workers[1:]:
            assert proc.wait(timeout=30) == 0
        with workq.connect(url) as broker:
            stats = broker.stats(queue)
            assert (stats.ready, stats.in_flight, stats.dead_letters) == (0, 0, 0)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
