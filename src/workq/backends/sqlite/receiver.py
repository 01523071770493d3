"""One consumer's claims on a sqlite queue: taking from a lane, settling, giving back.

Which lanes to take from (priority, tenants' turns) is the core's
(:class:`workq.polling.PollingReceiver`); a receive here counts a lane's ready rows,
claims them in a ``BEGIN IMMEDIATE`` transaction, and between polls waits for this
process's writes or ``poll_interval``.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ...driver import Received
from ...lanes import Lane
from ...polling import PollingReceiver
from ...spec import QueueSpec
from .codec import received, tenant_col

if TYPE_CHECKING:
    from .connection import Database

__all__ = ["SqliteReceiver"]

# Giving a held message back unprocessed (release, close): not an attempt; visible from
# its enqueue time, so it goes back to the front of its lane. One parameter: now.
_GIVE_BACK = (
    "deliveries = deliveries - 1, visible_at = MIN(enqueued_at, ?),"
    " lease_token = NULL, lease_owner = NULL"
)


def _ready(conn: sqlite3.Connection, lane: Lane, now: float, limit: int) -> list[int]:
    """The seqs of up to ``limit`` ready messages of ``lane``, in delivery order."""
    rows = conn.execute(
        "SELECT seq FROM workq_messages WHERE queue = ? AND tenant = ? AND priority = ?"
        " AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?",
        (lane.queue, tenant_col(lane.tenant), lane.priority, now, limit),
    ).fetchall()
    return [r[0] for r in rows]


def _any_ready(conn: sqlite3.Connection, queue: str, now: float) -> bool:
    """Whether any lane of ``queue`` has a message ready now."""
    row = conn.execute(
        "SELECT 1 FROM workq_messages WHERE queue = ? AND visible_at <= ? LIMIT 1",
        (queue, now),
    ).fetchone()
    return row is not None


class SqliteReceiver(PollingReceiver):
    """A consumer's claims on one queue, named by a random owner id."""

    def __init__(self, db: Database, spec: QueueSpec) -> None:
        self._db = db
        self._spec = spec
        self._owner = uuid.uuid4().hex

    # -- receiving: the core picks the lanes ----------------------------------------

    def available(self, lanes: Sequence[Lane], up_to: int) -> dict[Lane, int]:
        conn = self._db.conn()

        def count() -> dict[Lane, int]:
            now = time.time()
            # One query answers the idle case, so an idle consumer's cost does not grow
            # with its lane count; per-lane counts only when something is ready.
            if len(lanes) > 1 and not _any_ready(conn, lanes[0].queue, now):
                return {}
            return {lane: len(_ready(conn, lane, now, up_to)) for lane in lanes}

        if conn.in_transaction:  # inside step(), which retries as a whole
            return count()
        return self._db.retrying(count, "receive")

    def step(self, fn: Callable[[], list[Received]]) -> list[Received]:
        # One write transaction: two processes never claim the same row.
        return self._db.write("receive", lambda _tx: fn())

    def take(self, lane: Lane, n: int) -> list[Received]:
        tx = self._db.conn()
        now = time.time()
        token = secrets.randbits(62)
        until = now + self._spec.lease
        out: list[Received] = []
        for seq in _ready(tx, lane, now, n):
            row = tx.execute(
                "UPDATE workq_messages SET deliveries = deliveries + 1, visible_at = ?,"
                " lease_token = ?, lease_owner = ? WHERE seq = ?"
                " RETURNING queue, tenant, priority, id, body, headers, deliveries,"
                " enqueued_at",
                (until, token, self._owner, seq),
            ).fetchone()
            out.append(received(row, (seq, token)))
        return out

    def wait_any(self, lanes: list[Lane], max_count: int, timeout: float) -> None:
        # Other processes' writes are not notified: look again every poll_interval.
        with self._db.wakeup:
            self._db.wakeup.wait(min(timeout, self._db.settings.poll_interval))

    # -- settling ---------------------------------------------------------------------

    def ack(self, item: Received) -> None:
        seq, token = item.token
        self._db.write(
            "ack",
            lambda tx: tx.execute(
                "DELETE FROM workq_messages WHERE seq = ? AND lease_token = ?", (seq, token)
            ),
        )

    def nack(self, item: Received, delay: float | None) -> None:
        seq, token = item.token
        self._db.write(
            "nack",
            lambda tx: tx.execute(
                "UPDATE workq_messages SET visible_at = ?, lease_token = NULL, lease_owner = NULL"
                " WHERE seq = ? AND lease_token = ?",
                (time.time() + (delay or 0.0), seq, token),
            ),
        )
        self._db.notify()

    def dead_letter(self, item: Received, reason: str) -> None:
        seq, token = item.token

        def move(tx: sqlite3.Connection) -> None:
            tx.execute(
                "INSERT INTO workq_dead (queue, tenant, priority, id, body, headers,"
                " enqueued_at, deliveries, reason, dead_at)"
                " SELECT queue, tenant, priority, id, body, headers, enqueued_at, deliveries,"
                " ?, ? FROM workq_messages WHERE seq = ? AND lease_token = ?",
                (reason, time.time(), seq, token),
            )
            tx.execute("DELETE FROM workq_messages WHERE seq = ? AND lease_token = ?", (seq, token))

        self._db.write("dead_letter", move)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        if not items:
            return
        until = time.time() + seconds
        self._db.write(
            "extend",
            lambda tx: tx.executemany(
                "UPDATE workq_messages SET visible_at = MAX(visible_at, ?)"
                " WHERE seq = ? AND lease_token = ?",
                [(until, *item.token) for item in items],
            ),
        )

    def release(self, items: Sequence[Received]) -> None:
        if not items:
            return
        self._db.write(
            "release",
            lambda tx: tx.executemany(
                f"UPDATE workq_messages SET {_GIVE_BACK} WHERE seq = ? AND lease_token = ?",
                [(time.time(), *item.token) for item in items],
            ),
        )
        self._db.notify()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._db.closed:
            return
        self._db.write(
            "close",
            lambda tx: tx.execute(
                f"UPDATE workq_messages SET {_GIVE_BACK} WHERE lease_owner = ?",
                (time.time(), self._owner),
            ),
        )
        self._db.notify()
