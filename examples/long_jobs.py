"""Long jobs: a handler that runs three times longer than the lease keeps its message.

The queue's lease is 1 s; the handler takes 3 s. While it runs the worker extends the
lease, so a second idle worker never receives the same message.

    python examples/long_jobs.py
"""

from __future__ import annotations

import threading
import time

from _common import example_url, unique, wait_until, workers

import workq

LEASE, WORK = 1.0, 3.0


def main() -> None:
    queue = unique("long")
    deliveries: list[tuple[str, int]] = []
    finished = threading.Event()
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        with lock:
            deliveries.append((d.id, d.attempt))
        time.sleep(WORK)
        finished.set()

    with workq.connect(example_url("long_jobs")) as broker:
        broker.declare(queue, lease=LEASE)
        mid = broker.producer().publish(queue, {"report": "2026-11"})
        with workers(broker, queue, handle, 2, concurrency=1):
            wait_until(finished.is_set, 30, "the long job")
            # Give a wrongful redelivery a full lease to show itself.
            time.sleep(LEASE * 1.5)
            stats = broker.stats(queue)
    print(f"lease {LEASE}s, handler ran {WORK}s, 2 workers")
    print(f"deliveries of {mid}: {len(deliveries)} (attempts {[a for _, a in deliveries]})")
    print(f"left in queue: ready {stats.ready}, in flight {stats.in_flight}")
    print("redelivered while running: " + ("yes" if len(deliveries) > 1 else "no"))


if __name__ == "__main__":
    main()
