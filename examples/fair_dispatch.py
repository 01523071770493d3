"""Fair dispatch: skewed job durations on 4 workers, each holding one job at a time.

Most jobs are short; a few take 40 times longer. With prefetch=1 a worker takes a new
job only when it is free, so the long jobs do not trap short ones behind them and the
makespan stays close to the ideal lower bound max(total work / workers, longest job).

    python examples/fair_dispatch.py            # embedded SQLite, nothing to install
    WORKQ_URL=amqp://... python examples/fair_dispatch.py
"""

from __future__ import annotations

import random
import threading
import time

from _common import example_url, unique, wait_until, workers

import workq

WORKERS = 4
SHORT, LONG = 0.01, 0.4


def main() -> None:
    rng = random.Random(7)
    durations = [SHORT] * 76 + [LONG] * 4
    rng.shuffle(durations)
    queue = unique("fair")
    done = 0
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        nonlocal done
        time.sleep(d.json()["seconds"])
        with lock:
            done += 1

    with workq.connect(example_url("fair_dispatch")) as broker:
        broker.producer().publish_many(queue, [{"seconds": s} for s in durations])
        start = time.monotonic()
        with workers(broker, queue, handle, WORKERS, concurrency=1, prefetch=1):
            wait_until(lambda: done == len(durations), 60, "every job")
            makespan = time.monotonic() - start
    bound = max(sum(durations) / WORKERS, max(durations))
    print(f"jobs: {len(durations)} ({durations.count(LONG)} are {LONG / SHORT:.0f}x longer)")
    print(f"workers: {WORKERS}, prefetch 1 each")
    print(f"makespan: {makespan:.2f}s; ideal lower bound: {bound:.2f}s")
    print(f"makespan / lower bound: {makespan / bound:.2f}")


if __name__ == "__main__":
    main()
