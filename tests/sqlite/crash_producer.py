"""A producer process for the crash test: publishes N messages, writes their ids."""

from __future__ import annotations

import sys

import workq


def main() -> None:
    url, queue, idfile, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with workq.connect(url) as broker:
        broker.declare(queue, lease=2.0, max_attempts=5)
        ids = [broker.producer().publish(queue, {"i": i}) for i in range(n)]
    with open(idfile, "w") as f:
        f.write("\n".join(ids) + "\n")


if __name__ == "__main__":
    main()
