"""Cutover: move producers and consumers to a new broker without losing a message.

1. Producers publish to the old broker; consumers work there.
2. Producers switch to the new broker; consumers keep draining the old one.
3. When the old queue is empty, consumers switch to the new broker.
Every message is processed; none is lost. (``workq move`` moves a backlog instead.)

    python examples/cutover.py
    WORKQ_URL=amqp://old... WORKQ_NEW_URL=amqp://new... python examples/cutover.py
"""

from __future__ import annotations

import threading
import time

from _common import example_url, unique, wait_until, workers

import workq

BATCH = 50


def main() -> None:
    queue = unique("cutover")
    old_url = example_url("cutover-old")
    new_url = example_url("cutover-new", env="WORKQ_NEW_URL")
    processed: dict[str, str] = {}
    lock = threading.Lock()

    def handler(where: str) -> object:
        def handle(d: workq.Delivery) -> None:
            time.sleep(0.002)
            with lock:
                processed[d.id] = where

        return handle

    published: list[str] = []
    with workq.connect(old_url) as old, workq.connect(new_url) as new:
        with workers(old, queue, handler("old"), 2, concurrency=2):  # type: ignore[arg-type]
            published += old.producer().publish_many(queue, [{"i": i} for i in range(BATCH)])
            print(f"1. published {BATCH} to the old broker; consumers work there")
            published += new.producer().publish_many(
                queue, [{"i": i} for i in range(BATCH, 2 * BATCH)]
            )
            print(f"2. producers moved: published {BATCH} more to the new broker")

            def drained() -> bool:
                s = old.stats(queue)
                return s.ready == 0 and s.in_flight == 0

            wait_until(drained, 60, "the old queue to drain")
            print("   the old queue is drained")
        with workers(new, queue, handler("new"), 2, concurrency=2):  # type: ignore[arg-type]
            print("3. consumers moved to the new broker")
            wait_until(lambda: len(processed) >= len(published), 60, "every message")
    on_old = sum(1 for w in processed.values() if w == "old")
    print(
        f"processed {len(processed)} of {len(published)}: {on_old} on old, "
        f"{len(processed) - on_old} on new"
    )
    lost = set(published) - set(processed)
    print(f"lost: {len(lost)}")


if __name__ == "__main__":
    main()
