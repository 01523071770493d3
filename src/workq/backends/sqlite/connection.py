"""The sqlite file: its schema, one connection per thread, transactions and lock retries.

One file holds every queue. A message is a row; its lane is (queue, tenant, priority).
``visible_at`` (wall-clock seconds) is when it may be delivered: in the future it is
either delayed (no lease) or held under a lease; once it passes, the message is ready
again, which is how a crashed consumer's messages come back. Claims run in
``BEGIN IMMEDIATE`` transactions so two processes never take the same row; every
settlement names the claim's ``lease_token``, so a consumer whose lease lapsed cannot
settle a message that someone else now holds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ...errors import BrokerUnavailable
from ...retrying import REQUEST
from .settings import SqliteSettings

__all__ = ["Database"]

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

# Publishes, nacks and releases in this process wake this process's waiting receivers at
# once; other processes' writes are seen on the next poll.
_wakeups: dict[str, threading.Condition] = {}
_wakeups_lock = threading.Lock()


def _wakeup(path: str) -> threading.Condition:
    with _wakeups_lock:
        return _wakeups.setdefault(path, threading.Condition())


def _locked(exc: BaseException) -> bool:
    """Lock contention (SQLITE_BUSY/LOCKED, extended codes too): worth retrying."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Database:
    """One sqlite file (WAL), shared by a driver's threads; each thread has a connection.

    Example:
        ```python
        db = Database(SqliteSettings(path="jobs.db"))
        rows = db.retrying(lambda: db.conn().execute("SELECT 1").fetchall(), "ping")
        db.close()
        ```
    """

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.path = os.path.abspath(settings.path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self.closed = False
        #: Notified on every write in this process that may give a receiver work.
        self.wakeup = _wakeup(self.path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BrokerUnavailable(
                f"cannot create the directory of sqlite file {self.path!r}: {exc}; "
                "check the path in the sqlite:// URL and its permissions"
            ) from exc
        self.retrying(self._init_schema, "open")

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared by threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.closed:
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

    def retrying(self, fn: Callable[[], T], what: str) -> T:
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
            # The try above was the first; then ``publish_retries`` more (at least one).
            return REQUEST.retrying(_locked, attempts=self.settings.publish_retries)(fn)
        except sqlite3.Error as exc:
            raise BrokerUnavailable(
                f"sqlite {what} on {self.path!r} failed: {exc}; check the file is on a local "
                "disk, writable, and not locked by a stuck process"
            ) from exc

    def write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction, retrying lock contention."""

        def run() -> T:
            with self.transaction() as tx:
                return fn(tx)

        return self.retrying(run, what)

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
        """Wake this process's receivers waiting on this file."""
        with self.wakeup:
            self.wakeup.notify_all()

    def close(self) -> None:
        """Close every thread's connection. Idempotent."""
        if self.closed:
            return
        self.closed = True
        with self._conn_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # closing is best effort; every write was committed
                log.debug("closing a sqlite connection failed", exc_info=True)
        self._local = threading.local()
