"""Priority: higher-priority jobs are delivered first, even when queued last.

python examples/priority.py
"""

from __future__ import annotations

import threading

from _common import example_url, unique, wait_until, workers

import workq


def main() -> None:
    queue = unique("priority")
    seen: list[int] = []
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        with lock:
            seen.append(d.priority)

    with workq.connect(example_url("priority")) as broker:
        broker.declare(queue, max_priority=9)
        with broker.producer() as p:
            p.publish_many(queue, [workq.Message(f"routine {i}", priority=0) for i in range(20)])
            p.publish_many(queue, [workq.Message(f"normal {i}", priority=5) for i in range(5)])
            p.publish_many(queue, [workq.Message(f"urgent {i}", priority=9) for i in range(5)])
        with workers(broker, queue, handle, 1, concurrency=1, prefetch=1):
            wait_until(lambda: len(seen) == 30, 30, "every job")
    print("queued: 20 at priority 0, then 5 at priority 5, then 5 at priority 9")
    print("delivered priorities in order: " + " ".join(str(p) for p in seen))
    in_order = seen == sorted(seen, reverse=True)
    print("highest priority first: " + ("yes" if in_order else "no"))


if __name__ == "__main__":
    main()
