"""A worker process for the crash test: records each message it finishes.

Usage: crash_worker.py URL QUEUE LOGFILE [stick-at-N]. With stick-at-N, the Nth handler
call writes ``stuck <id>`` and hangs, so the test can SIGKILL the process mid-job.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import workq


def main() -> None:
    url, queue, logfile = sys.argv[1:4]
    stick_at = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    calls = 0
    lock = threading.Lock()

    def record(line: str) -> None:
        with lock, open(logfile, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def handle(d: workq.Delivery) -> None:
        nonlocal calls
        with lock:
            calls += 1
            mine = calls
        if mine == stick_at:
            record(f"stuck {d.id}")
            time.sleep(3600)
        time.sleep(0.02)
        record(f"done {d.id} {d.attempt}")

    with workq.connect(url) as broker:
        broker.declare(queue, lease=2.0, max_attempts=5)
        record("ready")
        broker.worker(queue, handle, concurrency=2, shutdown_timeout=10).run()
    record("exit")


if __name__ == "__main__":
    main()
