"""SQLite backend benchmark: workq against raw sqlite3 on the same file, side by side.

    python benchmarks/sqlite.py [--n N] [--url sqlite:///path.db]

The URL comes from --url, else $WORKQ_URL (if it is a sqlite:// URL), else a file in a
temporary directory. Raw sqlite3 does the same work the way a careful hand-written queue
would: WAL, synchronous=FULL, a commit per publish, claim-then-delete per message.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import workq
from workq.settings import SqliteSettings, parse_url


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def raw_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS raw_jobs (seq INTEGER PRIMARY KEY, body BLOB,"
        " visible_at REAL, token INTEGER)"
    )
    return conn


def raw_publish(conn: sqlite3.Connection, n: int) -> None:
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO raw_jobs (body, visible_at) VALUES (?, ?)", (b"x" * 100, time.time())
        )
        conn.execute("COMMIT")


def raw_publish_batch(conn: sqlite3.Connection, n: int, batch: int) -> None:
    for start in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO raw_jobs (body, visible_at) VALUES (?, ?)",
            [(b"x" * 100, time.time()) for _ in range(min(batch, n - start))],
        )
        conn.execute("COMMIT")


def raw_consume(conn: sqlite3.Connection, n: int, batch: int) -> None:
    done = 0
    while done < n:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT seq FROM raw_jobs WHERE visible_at <= ? ORDER BY seq LIMIT ?",
            (time.time(), batch),
        ).fetchall()
        conn.executemany(
            "UPDATE raw_jobs SET visible_at = ?, token = 1 WHERE seq = ?",
            [(time.time() + 30, r[0]) for r in rows],
        )
        conn.execute("COMMIT")
        for (seq,) in rows:  # ack each one in its own commit, as a worker would
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM raw_jobs WHERE seq = ? AND token = 1", (seq,))
            conn.execute("COMMIT")
        done += len(rows)


def workq_consume(broker: workq.Broker, queue: str, n: int, prefetch: int) -> None:
    with broker.consumer(queue, prefetch=prefetch) as c:
        for _ in range(n):
            d = c.get(timeout=10)
            assert d is not None, "the benchmark queue ran dry"
            d.ack()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per measurement")
    parser.add_argument("--url", default=None, help="sqlite:// URL (default: $WORKQ_URL or tmp)")
    args = parser.parse_args()
    n = args.n
    url = args.url or os.environ.get("WORKQ_URL", "")
    tmp = None
    if not url.startswith("sqlite://"):
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite://{Path(tmp.name) / 'bench.db'}"
    settings = parse_url(url)
    assert isinstance(settings, SqliteSettings)
    conn = raw_connect(settings.path)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    body = b"x" * 100
    results: list[tuple[str, float, float]] = []
    with workq.connect(url) as broker:
        producer = broker.producer()
        producer.publish(queue, body)  # declare outside the measurement
        workq_consume(broker, queue, 1, 1)

        def single() -> None:
            for _ in range(n):
                producer.publish(queue, body)

        w = rate(n, single)
        r = rate(n, lambda: raw_publish(conn, n))
        results.append(("publish, one commit each", w, r))

        w = rate(n, lambda: workq_consume(broker, queue, n, 100))
        r = rate(n, lambda: raw_consume(conn, n, 100))
        results.append(("consume prefetch 100 + ack", w, r))

        def batched() -> None:
            for start in range(0, n, 100):
                producer.publish_many(queue, [body] * min(100, n - start))

        w = rate(n, batched)
        r = rate(n, lambda: raw_publish_batch(conn, n, 100))
        results.append(("publish_many, 100 per commit", w, r))
    conn.close()
    print(f"sqlite benchmark, n={n}, file {settings.path}")
    print(f"{'operation':32} {'workq msg/s':>12} {'sqlite3 msg/s':>14} {'ratio':>7}")
    for name, w, r in results:
        print(f"{name:32} {w:12.0f} {r:14.0f} {w / r:7.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
