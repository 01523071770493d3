"""``sqlite:///path.db``: the embedded, durable default, shared by processes on one machine.

One file holds every queue. A message is a row; its lane is (queue, tenant, priority).
``visible_at`` (wall-clock seconds) is when it may be delivered: in the future it is
either delayed (no lease) or held under a lease; once it passes, the message is ready
again, which is how a crashed consumer's messages come back. Claims run in
``BEGIN IMMEDIATE`` transactions so two processes never take the same row; every
settlement names the claim's ``lease_token``, so a consumer whose lease lapsed cannot
settle a message that someone else now holds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ...driver import Capabilities, DeadLetter, Driver, LaneStats, QueueStats, Receiver
from ...errors import BrokerUnavailable, PublishError
from ...lanes import Lane, spread
from ...messages import Outgoing, Received
from ...spec import QueueSpec
from ...specs import Stored, adopt_or_conflict
from .settings import SqliteSettings

__all__ = ["SqliteDriver", "SqliteReceiver", "create_driver"]

log = logging.getLogger("workq.sqlite")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS workq_queues (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    provisional INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workq_lanes (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    PRIMARY KEY (queue, tenant, priority)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workq_messages (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    visible_at REAL NOT NULL,
    lease_token INTEGER,
    lease_owner TEXT
);
CREATE INDEX IF NOT EXISTS workq_messages_ready
    ON workq_messages (queue, tenant, priority, visible_at, seq);
CREATE INDEX IF NOT EXISTS workq_messages_owner
    ON workq_messages (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS workq_dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS workq_dead_queue ON workq_dead (queue, seq);
"""

# Giving a held message back unprocessed (release, close): not an attempt; visible from
# its enqueue time, so it goes back to the front of its lane. One parameter: now.
_GIVE_BACK = (
    "deliveries = deliveries - 1, visible_at = MIN(enqueued_at, ?),"
    " lease_token = NULL, lease_owner = NULL"
)

# Publishes, nacks and releases in this process wake this process's waiting receivers at
# once; other processes' writes are seen on the next poll.
_wakeups: dict[str, threading.Condition] = {}
_wakeups_lock = threading.Lock()


def _wakeup(path: str) -> threading.Condition:
    with _wakeups_lock:
        return _wakeups.setdefault(path, threading.Condition())


def _tenant_col(tenant: str | None) -> str:
    # Real tenant names cannot be empty, so "" stands for the default lane and keeps
    # the column NOT NULL (NULLs would defeat the primary key and the index).
    return tenant or ""


def _tenant_of(col: str) -> str | None:
    return col or None


def _spec_json(spec: QueueSpec) -> str:
    """The delivery rules a declaration stores: every QueueSpec setting (sqlite takes no
    backend options)."""
    return json.dumps({name: getattr(spec, name) for name in QueueSpec.SETTINGS})


def _spec_from(name: str, text: str) -> QueueSpec:
    return QueueSpec(name, **json.loads(text))


def _locked(exc: BaseException) -> bool:
    """Lock contention (SQLITE_BUSY/LOCKED, extended codes too): worth retrying."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def create_driver(settings: SqliteSettings) -> SqliteDriver:
    """A driver on the file ``settings.path``, creating it (and its directory) if needed."""
    return SqliteDriver(settings)


class SqliteDriver(Driver):
    """Queues in one SQLite file (WAL), safe for several processes and threads."""

    capabilities = Capabilities(backend="sqlite", lease_model="lease", lane_refresh=0.2)

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.path = os.path.abspath(settings.path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._closed = False
        # Lanes are never deleted, so one known to exist need not be inserted again.
        self._known_lanes: set[tuple[str, str, int]] = set()
        self.wakeup = _wakeup(self.path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BrokerUnavailable(
                f"cannot create the directory of sqlite file {self.path!r}: {exc}; "
                "check the path in the sqlite:// URL and its permissions"
            ) from exc
        self._retrying(self._init_schema, "open")

    # -- connections -------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared by threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise BrokerUnavailable(f"the sqlite broker on {self.path!r} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.settings.busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only so close() may close it from another thread
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
        except sqlite3.Error as exc:
            raise BrokerUnavailable(
                f"cannot open sqlite file {self.path!r}: {exc}; check that the path is a "
                "writable file (not a directory) on a local disk"
            ) from exc
        self._local.conn = conn
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction on this thread's connection; IMMEDIATE takes the write lock now."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn``, retrying lock contention beyond busy_timeout; BrokerUnavailable after.

        Other errors (a directory for a file, a full disk...) are not retried.
        """
        try:
            try:
                return fn()  # the common case, without building a retry loop
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
                log.debug("sqlite %s on %r found the file locked; retrying", what, self.path)
            return retry(
                retry=retry_if_exception(_locked),
                stop=stop_after_attempt(max(self.settings.publish_retries, 1)),
                wait=wait_exponential(multiplier=0.05, max=2.0),
                reraise=True,
            )(fn)()
        except sqlite3.Error as exc:
            raise BrokerUnavailable(
                f"sqlite {what} on {self.path!r} failed: {exc}; check the file is on a local "
                "disk, writable, and not locked by a stuck process"
            ) from exc

    def _init_schema(self) -> None:
        conn = self.conn()
        # Switching to WAL needs the file to itself for a moment; it persists in the file.
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # executescript commits on its own, so run the DDL statement by statement.
        with self.transaction() as tx:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    tx.execute(statement)

    def notify(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()

    # -- queues ------------------------------------------------------------------

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        spec.check_options("sqlite")
        return self._retrying(lambda: self._declare(spec, implicit), "declare")

    def _declare(self, spec: QueueSpec, implicit: bool) -> QueueSpec:
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT spec, provisional FROM workq_queues WHERE name = ?", (spec.name,)
            ).fetchone()
            stored = None if row is None else Stored(_spec_from(spec.name, row[0]), bool(row[1]))
            effective, write = adopt_or_conflict(stored, spec, implicit)
            if write is not None:
                tx.execute(
                    "INSERT OR REPLACE INTO workq_queues (name, spec, provisional)"
                    " VALUES (?, ?, ?)",
                    (spec.name, _spec_json(write.spec), int(write.implicit)),
                )
        return effective

    def inspect(self, spec: QueueSpec) -> QueueSpec | None:
        def read() -> QueueSpec | None:
            row = (
                self.conn()
                .execute("SELECT spec FROM workq_queues WHERE name = ?", (spec.name,))
                .fetchone()
            )
            return None if row is None else _spec_from(spec.name, row[0])

        return self._retrying(read, "inspect")

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        if self._closed:
            raise PublishError(f"cannot publish to {spec.name!r}: the sqlite broker is closed")
        rows = []
        lanes = set()
        now = time.time()
        for m in messages:
            tenant = _tenant_col(m.lane.tenant)
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

        def write() -> None:
            with self.transaction() as tx:
                if new_lanes:
                    tx.executemany(
                        "INSERT OR IGNORE INTO workq_lanes (queue, tenant, priority)"
                        " VALUES (?, ?, ?)",
                        new_lanes,
                    )
                tx.executemany(
                    "INSERT INTO workq_messages (queue, tenant, priority, id, body, headers, "
                    "enqueued_at, deliveries, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

        try:
            self._retrying(write, "publish")
        except BrokerUnavailable as exc:
            raise PublishError(
                f"{len(rows)} message(s) for queue {spec.name!r} were not published: {exc}"
            ) from exc
        self._known_lanes.update(new_lanes)
        self.notify()

    def queues(self) -> list[str]:
        rows = self._retrying(
            lambda: self.conn().execute("SELECT name FROM workq_queues ORDER BY name").fetchall(),
            "queues",
        )
        return [str(name) for (name,) in rows]

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        rows = self._retrying(
            lambda: (
                self.conn()
                .execute("SELECT tenant, priority FROM workq_lanes WHERE queue = ?", (spec.name,))
                .fetchall()
            ),
            "lanes",
        )
        return [Lane(spec.name, _tenant_of(t), p) for t, p in rows]

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return SqliteReceiver(self, spec)

    def stats(self, spec: QueueSpec) -> QueueStats:
        def read() -> tuple[list[Any], int]:
            conn = self.conn()
            now = time.time()
            counts = conn.execute(
                "SELECT l.tenant, l.priority,"
                " COALESCE(SUM(m.visible_at <= :now), 0),"
                " COALESCE(SUM(m.visible_at > :now AND m.lease_token IS NOT NULL), 0),"
                " COALESCE(SUM(m.visible_at > :now AND m.lease_token IS NULL), 0)"
                " FROM workq_lanes l LEFT JOIN workq_messages m"
                " ON m.queue = l.queue AND m.tenant = l.tenant AND m.priority = l.priority"
                " WHERE l.queue = :queue GROUP BY l.tenant, l.priority"
                " ORDER BY l.tenant, l.priority DESC",
                {"now": now, "queue": spec.name},
            ).fetchall()
            dead = conn.execute(
                "SELECT COUNT(*) FROM workq_dead WHERE queue = ?", (spec.name,)
            ).fetchone()[0]
            return counts, int(dead)

        counts, dead = self._retrying(read, "stats")
        return QueueStats(
            queue=spec.name,
            lanes=[
                LaneStats(Lane(spec.name, _tenant_of(t), p), int(r), int(h), int(d))
                for t, p, r, h, d in counts
            ],
            dead_letters=dead,
        )

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        rows = self._retrying(
            lambda: (
                self.conn()
                .execute(
                    "SELECT id, tenant, priority, body, headers, reason, deliveries, enqueued_at"
                    " FROM workq_dead WHERE queue = ? ORDER BY seq LIMIT ?",
                    (spec.name, limit),
                )
                .fetchall()
            ),
            "dead_letters",
        )
        return [
            DeadLetter(
                id=mid,
                queue=spec.name,
                tenant=_tenant_of(tenant),
                priority=priority,
                body=bytes(body),
                headers=json.loads(headers),
                reason=reason,
                attempt=deliveries,
                enqueued_at=enqueued_at,
            )
            for mid, tenant, priority, body, headers, reason, deliveries, enqueued_at in rows
        ]

    def redrive(self, spec: QueueSpec) -> int:
        def move() -> int:
            now = time.time()
            with self.transaction() as tx:
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
                    (now, spec.name),
                ).rowcount
                tx.execute("DELETE FROM workq_dead WHERE queue = ?", (spec.name,))
                return int(moved)

        moved = self._retrying(move, "redrive")
        self.notify()
        return moved

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._conn_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # closing is best effort; every write was committed
                log.debug("closing a sqlite connection failed", exc_info=True)
        self._local = threading.local()


class SqliteReceiver(Receiver):
    """A consumer's claims on one queue, named by a random owner id."""

    def __init__(self, driver: SqliteDriver, spec: QueueSpec) -> None:
        self._driver = driver
        self._spec = spec
        self._owner = uuid.uuid4().hex
        self._closed = False

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        lanes = list(lanes)
        deadline = time.monotonic() + timeout
        poll = self._driver.settings.poll_interval
        while True:
            if max_count > 0 and lanes and not self._closed:
                got = self._driver._retrying(lambda: self._claim(lanes, max_count), "receive")
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._driver.wakeup:
                self._driver.wakeup.wait(min(remaining, poll))

    def _available(self, conn: sqlite3.Connection, lane: Lane, now: float, limit: int) -> list[int]:
        rows = conn.execute(
            "SELECT seq FROM workq_messages WHERE queue = ? AND tenant = ? AND priority = ?"
            " AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?",
            (lane.queue, _tenant_col(lane.tenant), lane.priority, now, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def _claim(self, lanes: list[Lane], max_count: int) -> list[Received]:
        conn = self._driver.conn()
        now = time.time()
        # A cheap read first: an idle consumer must not take the write lock every poll.
        if not any(self._available(conn, lane, now, 1) for lane in lanes):
            return []
        with self._driver.transaction() as tx:
            now = time.time()
            found: dict[Lane, list[int]] = {}
            total = 0
            # Visit priority levels top down and stop once the batch can be filled.
            for priority in sorted({lane.priority for lane in lanes}, reverse=True):
                for lane in lanes:
                    if lane.priority == priority:
                        found[lane] = self._available(tx, lane, now, max_count)
                        total += len(found[lane])
                if total >= max_count:
                    break
            plan = spread(lanes, max_count, {lane: len(s) for lane, s in found.items()})
            # Lane order within the batch does not matter: the consumer buffers per lane
            # and hands out by the lane rules; only each lane's own order is kept.
            order = [seq for lane, n in plan.items() for seq in found[lane][:n]]
            if not order:
                return []
            token = secrets.randbits(62)
            until = now + self._spec.lease
            out: list[Received] = []
            for seq in order:
                row = tx.execute(
                    "UPDATE workq_messages SET deliveries = deliveries + 1, visible_at = ?,"
                    " lease_token = ?, lease_owner = ? WHERE seq = ?"
                    " RETURNING queue, tenant, priority, id, body, headers, deliveries,"
                    " enqueued_at",
                    (until, token, self._owner, seq),
                ).fetchone()
                queue, tenant, priority, mid, body, headers, deliveries, enqueued_at = row
                out.append(
                    Received(
                        lane=Lane(queue, _tenant_of(tenant), priority),
                        id=mid,
                        body=bytes(body),
                        headers=json.loads(headers),
                        attempt=deliveries,
                        enqueued_at=enqueued_at,
                        token=(seq, token),
                    )
                )
        return out

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        def run() -> None:
            with self._driver.transaction() as tx:
                fn(tx)

        self._driver._retrying(run, what)

    def ack(self, item: Received) -> None:
        seq, token = item.token
        self._write(
            "ack",
            lambda tx: tx.execute(
                "DELETE FROM workq_messages WHERE seq = ? AND lease_token = ?", (seq, token)
            ),
        )

    def nack(self, item: Received, delay: float | None) -> None:
        seq, token = item.token
        self._write(
            "nack",
            lambda tx: tx.execute(
                "UPDATE workq_messages SET visible_at = ?, lease_token = NULL, lease_owner = NULL"
                " WHERE seq = ? AND lease_token = ?",
                (time.time() + (delay or 0.0), seq, token),
            ),
        )
        self._driver.notify()

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

        self._write("dead_letter", move)

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        if not items:
            return
        until = time.time() + seconds
        self._write(
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
        self._write(
            "release",
            lambda tx: tx.executemany(
                f"UPDATE workq_messages SET {_GIVE_BACK} WHERE seq = ? AND lease_token = ?",
                [(time.time(), *item.token) for item in items],
            ),
        )
        self._driver.notify()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._driver._closed:
            return
        self._write(
            "close",
            lambda tx: tx.execute(
                f"UPDATE workq_messages SET {_GIVE_BACK} WHERE lease_owner = ?",
                (time.time(), self._owner),
            ),
        )
        self._driver.notify()
