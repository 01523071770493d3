"""Tenant lanes: one noisy tenant does not starve two quiet ones.

The noisy tenant queues 300 jobs first; two quiet tenants then queue 10 each. Within a
priority the tenants are served round-robin, so the quiet tenants finish long before
the noisy backlog is worked off.

    python examples/tenant_routing.py
"""

from __future__ import annotations

import threading
import time

from _common import example_url, unique, wait_until, workers

import workq

NOISY, QUIET = 300, 10


def main() -> None:
    queue = unique("tenants")
    order: list[str] = []
    lock = threading.Lock()

    def handle(d: workq.Delivery) -> None:
        time.sleep(0.002)
        with lock:
            order.append(d.tenant or "")

    with workq.connect(example_url("tenant_routing")) as broker:
        with broker.producer() as p:
            p.publish_many(queue, [workq.Message({"i": i}, tenant="noisy") for i in range(NOISY)])
            for tenant in ("quiet-a", "quiet-b"):
                p.publish_many(
                    queue, [workq.Message({"i": i}, tenant=tenant) for i in range(QUIET)]
                )
        total = NOISY + 2 * QUIET
        with workers(broker, queue, handle, 1, concurrency=2):
            wait_until(lambda: len(order) == total, 60, "every job")
    print(f"queued: noisy {NOISY} first, then quiet-a {QUIET} and quiet-b {QUIET}")
    for tenant in ("quiet-a", "quiet-b", "noisy"):
        last = max(i for i, t in enumerate(order) if t == tenant) + 1
        print(f"{tenant:8} all done after {last:3} of {total} deliveries")
    quiet_last = max(i for i, t in enumerate(order) if t != "noisy") + 1
    noisy_after = order[quiet_last:].count("noisy")
    print(f"quiet tenants finished while noisy still had {noisy_after} jobs waiting")
    starved = quiet_last > 4 * QUIET + 10
    print("quiet tenants starved: " + ("yes" if starved else "no"))


if __name__ == "__main__":
    main()
