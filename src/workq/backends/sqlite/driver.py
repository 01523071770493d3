"""``sqlite:///path.db``: the embedded, durable default, shared by processes on one machine.

The file and its connections are :mod:`.connection`'s, column values :mod:`.codec`'s,
a consumer's claims :mod:`.receiver`'s; this module manages queues: declaring,
publishing, lanes, stats, dead letters.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ...declarations import Stored, adopt_or_conflict
from ...driver import Capabilities, DeadLetter, Driver, LaneStats, Outgoing, QueueStats, Receiver
from ...errors import BrokerUnavailable, PublishError
from ...lanes import Lane
from ...spec import QueueSpec
from .codec import dead_letter, spec_from, spec_json, tenant_col, tenant_of
from .connection import Database
from .receiver import SqliteReceiver
from .settings import SqliteSettings

__all__ = ["SqliteDriver", "SqliteReceiver", "create_driver"]


def create_driver(settings: SqliteSettings) -> SqliteDriver:
    """A driver on the file ``settings.path``, creating it (and its directory) if needed."""
    return SqliteDriver(settings)


class SqliteDriver(Driver):
    """Queues in one SQLite file (WAL), safe for several processes and threads."""

    capabilities = Capabilities(backend="sqlite", lease_model="lease", lane_refresh=0.2)

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.db = Database(settings)
        self.path = self.db.path
        # Lanes are never deleted, so one known to exist need not be inserted again.
        self._known_lanes: set[tuple[str, str, int]] = set()
        self._lanes: dict[str, tuple[int, list[Lane]]] = {}

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        spec.check_options("sqlite")
        return self.db.retrying(lambda: self._declare(spec, implicit), "declare")

    def _declare(self, spec: QueueSpec, implicit: bool) -> QueueSpec:
        with self.db.transaction() as tx:
            row = tx.execute(
                "SELECT spec, provisional FROM workq_queues WHERE name = ?", (spec.name,)
            ).fetchone()
            stored = None if row is None else Stored(spec_from(spec.name, row[0]), bool(row[1]))
            effective, write = adopt_or_conflict(stored, spec, implicit)
            if write is not None:
                tx.execute(
                    "INSERT OR REPLACE INTO workq_queues (name, spec, provisional)"
                    " VALUES (?, ?, ?)",
                    (spec.name, spec_json(write.spec), int(write.implicit)),
                )
        return effective

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        def read() -> QueueSpec | None:
            row = (
                self.db.conn()
                .execute("SELECT spec FROM workq_queues WHERE name = ?", (spec.name,))
                .fetchone()
            )
            return None if row is None else spec_from(spec.name, row[0])

        return self.db.retrying(read, "inspect")

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        if self.db.closed:
            raise PublishError(f"cannot publish to {spec.name!r}: the sqlite broker is closed")
        rows = []
        lanes = set()
        now = time.time()
        for m in messages:
            tenant = tenant_col(m.lane.tenant)
            lanes.add((m.lane.queue, tenant, m.lane.priority))
            rows.append(
                (
                    m.lane.queue,
                    tenant,
                    m.lane.priority,
                    m.id,
                    m.body,
                    json.dumps(m.headers),
                    m.enqueued_at,
                    m.attempt - 1,
                    now + m.delay if m.delay else m.enqueued_at,
                )
            )
        new_lanes = sorted(lanes - self._known_lanes)

        def write(tx: sqlite3.Connection) -> None:
            if new_lanes:
                tx.executemany(
                    "INSERT OR IGNORE INTO workq_lanes (queue, tenant, priority) VALUES (?, ?, ?)",
                    new_lanes,
                )
            tx.executemany(
                "INSERT INTO workq_messages (queue, tenant, priority, id, body, headers, "
                "enqueued_at, deliveries, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        try:
            self.db.write("publish", write)
        except BrokerUnavailable as exc:
            raise PublishError(
                f"{len(rows)} message(s) for queue {spec.name!r} were not published: {exc}"
            ) from exc
        self._known_lanes.update(new_lanes)
        self.db.notify()

    def _read(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        """All rows of one query on this thread's connection, retrying lock contention."""
        return self.db.retrying(lambda: self.db.conn().execute(sql, params).fetchall(), what)

    def queues(self) -> list[str]:
        rows = self._read("queues", "SELECT name FROM workq_queues ORDER BY name", ())
        return [str(name) for (name,) in rows]

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        # A consumer of every tenant lists lanes each second; lanes are only ever added,
        # so an unchanged count means an unchanged list, and the same list (the same
        # object: the core then skips its own comparison) costs no rows and no objects.
        ((count,),) = self._read(
            "lanes", "SELECT count(*) FROM workq_lanes WHERE queue = ?", (spec.name,)
        )
        cached = self._lanes.get(spec.name)
        if cached is not None and cached[0] == count:
            return cached[1]
        rows = self._read(
            "lanes", "SELECT tenant, priority FROM workq_lanes WHERE queue = ?", (spec.name,)
        )
        lanes = [Lane(spec.name, tenant_of(t), p) for t, p in rows]
        self._lanes[spec.name] = (len(lanes), lanes)
        return lanes

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return SqliteReceiver(self.db, spec)

    def stats(self, spec: QueueSpec) -> QueueStats:
        def read() -> tuple[list[Any], int]:
            conn = self.db.conn()
            counts = conn.execute(
                "SELECT l.tenant, l.priority,"
                " COALESCE(SUM(m.visible_at <= :now), 0),"
                " COALESCE(SUM(m.visible_at > :now AND m.lease_token IS NOT NULL), 0),"
                " COALESCE(SUM(m.visible_at > :now AND m.lease_token IS NULL), 0)"
                " FROM workq_lanes l LEFT JOIN workq_messages m"
                " ON m.queue = l.queue AND m.tenant = l.tenant AND m.priority = l.priority"
                " WHERE l.queue = :queue GROUP BY l.tenant, l.priority"
                " ORDER BY l.tenant, l.priority DESC",
                {"now": time.time(), "queue": spec.name},
            ).fetchall()
            dead = conn.execute(
                "SELECT COUNT(*) FROM workq_dead WHERE queue = ?", (spec.name,)
            ).fetchone()[0]
            return counts, int(dead)

        counts, dead = self.db.retrying(read, "stats")
        return QueueStats(
            queue=spec.name,
            lanes=[
                LaneStats(Lane(spec.name, tenant_of(t), p), int(r), int(h), int(d))
                for t, p, r, h, d in counts
            ],
            dead_letters=dead,
        )

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        rows = self._read(
            "dead_letters",
            "SELECT id, tenant, priority, body, headers, reason, deliveries, enqueued_at"
            " FROM workq_dead WHERE queue = ? ORDER BY seq LIMIT ?",
            (spec.name, limit),
        )
        return [dead_letter(spec.name, row) for row in rows]

    def redrive(self, spec: QueueSpec) -> int:
        def move(tx: sqlite3.Connection) -> int:
            tx.execute(
                "INSERT OR IGNORE INTO workq_lanes (queue, tenant, priority)"
                " SELECT DISTINCT queue, tenant, priority FROM workq_dead WHERE queue = ?",
                (spec.name,),
            )
            moved = tx.execute(
                "INSERT INTO workq_messages (queue, tenant, priority, id, body, headers,"
                " enqueued_at, deliveries, visible_at)"
                " SELECT queue, tenant, priority, id, body, headers, enqueued_at, 0, ?"
                " FROM workq_dead WHERE queue = ? ORDER BY seq",
                (time.time(), spec.name),
            ).rowcount
            tx.execute("DELETE FROM workq_dead WHERE queue = ?", (spec.name,))
            return int(moved)

        moved = self.db.write("redrive", move)
        self.db.notify()
        return moved

    def close(self) -> None:
        self.db.close()
