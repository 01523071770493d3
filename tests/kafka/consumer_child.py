"""A consumer process for the crash test: acks slowly and records every id it acked.

Usage: python consumer_child.py URL QUEUE OUTFILE
"""

from __future__ import annotations

import sys
import time

import workq


def main() -> None:
    url, queue, outfile = sys.argv[1:4]
    with (
        workq.connect(url) as broker,
        broker.consumer(queue, prefetch=10) as c,
        open(outfile, "a", buffering=1) as out,
    ):
        for d in c:
            time.sleep(0.02)  # simulated work, so the test can kill it mid-stream
            d.ack()
            out.write(d.id + "\n")


if __name__ == "__main__":
    main()
