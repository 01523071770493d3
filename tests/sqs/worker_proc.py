"""A worker process for the SQS fault tests: ``python worker_proc.py URL QUEUE MODE MARKER``.

Modes: ``hang`` (concurrency 1, the handler never finishes) and ``prefetch``
(concurrency 1, prefetch 4, the handler takes a while). Each handler start appends the
message id to MARKER so the test can wait on it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import workq


def main() -> None:
    url, queue, mode, marker = sys.argv[1:5]

    def handle(d: workq.Delivery) -> None:
        with Path(marker).open("a") as f:
            f.write(d.id + "\n")
        time.sleep(3600 if mode == "hang" else 2.0)

    with workq.connect(url) as broker:
        prefetch = 4 if mode == "prefetch" else 1
        broker.worker(queue, handle, concurrency=1, prefetch=prefetch, shutdown_timeout=10).run()


if __name__ == "__main__":
    main()
