"""The SQLite backend against real files: durability, leases, lanes, dead letters."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

import workq
from workq.backends.sqlite.driver import SqliteDriver
from workq.lanes import Lane

pytestmark = pytest.mark.sqlite


def qname() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def test_url_forms(tmp_path: Path) -> None:
    absolute = workq.Settings.from_url(f"sqlite://{tmp_path}/a.db").resolve()
    assert absolute.path == f"{tmp_path}/a.db"  # type: ignore[attr-defined]
    relative = workq.Settings.from_url("sqlite://rel/b.db?poll_interval=0.2").resolve()
    assert relative.path == "rel/b.db"  # type: ignore[attr-defined]
    with pytest.raises(workq.ConfigurationError, match="poll_interval"):
        workq.connect(f"sqlite://{tmp_path}/a.db?poll_interval=-1")
    with pytest.raises(workq.ConfigurationError, match="synchronous"):
        workq.connect(f"sqlite://{tmp_path}/a.db?synchronous=OFF")


def test_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "jobs.db"
    with workq.connect(f"sqlite://{path}") as broker:
        broker.producer().publish(qname(), b"x")
        driver = broker.driver
        assert isinstance(driver, SqliteDriver)
        mode = driver.db.conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert path.exists()
    assert mode == "wal"


def test_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(workq.BrokerUnavailable, match="sqlite"):
        workq.connect(f"sqlite://{tmp_path}")


def test_published_message_survives_reconnect(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        mid = broker.producer().publish(q, {"n": 1}, tenant="acme", priority=3, headers={"h": "v"})
    with workq.connect(sqlite_url) as broker, broker.consumer(q) as c:
        d = c.get(timeout=5)
        assert d is not None
        assert (d.id, d.json(), d.tenant, d.priority) == (mid, {"n": 1}, "acme", 3)
        assert d.headers["h"] == "v"
        assert d.attempt == 1
        d.ack()
    with workq.connect(sqlite_url) as broker:
        assert broker.stats(q).ready == 0


def test_unsettled_message_comes_back_after_its_lease(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        spec = broker.declare(q, lease=0.3)
        broker.producer().publish(q, b"job")
        driver = broker.driver
        first = driver.open(spec, 1)
        got = first.receive([Lane(q)], 1, 5)
        assert [r.attempt for r in got] == [1]
        # The first receiver neither settles nor closes: a crashed consumer.
        second = driver.open(spec, 1)
        again = second.receive([Lane(q)], 1, 10)
        assert [(r.id, r.attempt) for r in again] == [(got[0].id, 2)]
        # The stale claim cannot settle what the second consumer now holds.
        first.ack(got[0])
        assert broker.stats(q).in_flight == 1
        second.ack(again[0])
        assert broker.stats(q).in_flight == 0


def test_extend_keeps_the_lease(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        spec = broker.declare(q, lease=0.3)
        broker.producer().publish(q, b"job")
        holder = broker.driver.open(spec, 1)
        got = holder.receive([Lane(q)], 1, 5)
        holder.extend(got, 60)
        other = broker.driver.open(spec, 1)
        # Past the original lease the message is still held, so nothing is delivered.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert other.receive([Lane(q)], 1, 0.1) == []
        assert broker.stats(q).in_flight == 1
        holder.ack(got[0])


def test_release_and_close_give_back_without_counting_an_attempt(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        broker.producer().publish_many(q, [b"a", b"b"])
        with broker.consumer(q, prefetch=2) as c:
            assert c.get(timeout=5) is not None
        with broker.consumer(q, prefetch=2) as c:
            seen = [c.get(timeout=5), c.get(timeout=5)]
            assert [d.attempt for d in seen if d] == [1, 1]
            assert [d.body for d in seen if d] == [b"a", b"b"]
            for d in seen:
                assert d is not None
                d.ack()


def test_priority_first_then_tenants_round_robin(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        with broker.producer() as p:
            p.publish_many(q, [workq.Message(f"noisy{i}", tenant="noisy") for i in range(6)])
            p.publish(q, "quiet", tenant="quiet")
            p.publish(q, "urgent", tenant="noisy", priority=9)
        with broker.consumer(q, prefetch=1) as c:
            order = []
            for _ in range(8):
                d = c.get(timeout=5)
                assert d is not None
                order.append(d.text())
                d.ack()
    assert order[0] == "urgent"
    assert order.index("quiet") <= 2
    # Exactly: priority 9 first, then at priority 0 the tenants alternate (by name).
    assert order == ["urgent", "noisy0", "quiet", *(f"noisy{i}" for i in range(1, 6))]


def test_delay_and_nack_delay(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        # Delays long enough that a slow machine cannot see them lapse before the checks.
        published = time.monotonic()
        broker.producer().publish(q, b"later", delay=1.0)
        stats = broker.stats(q)
        assert (stats.ready, stats.lanes[0].delayed) == (0, 1)
        with broker.consumer(q) as c:
            assert c.get(timeout=0.1) is None
            d = c.get(timeout=10)
            assert d is not None and d.body == b"later"
            assert time.monotonic() - published >= 1.0 - 0.05  # not before its delay
            nacked = time.monotonic()
            d.nack(delay=1.0)
            assert broker.stats(q).lanes[0].delayed == 1
            d2 = c.get(timeout=10)
            assert d2 is not None and d2.attempt == 2
            assert time.monotonic() - nacked >= 1.0 - 0.05
            d2.ack()


def test_dead_letters_keep_reason_and_redrive(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        broker.declare(q, max_attempts=2, retry_delay=0)
        broker.producer().publish_many(q, [b"bad", b"worse"])
        with broker.consumer(q) as c:
            d = c.get(timeout=5)
            assert d is not None
            d.reject("bad input")
            for _ in range(2):
                d = c.get(timeout=5)
                assert d is not None
                d.nack()
        dead = broker.dead_letters(q)
        assert [(x.body, x.attempt) for x in dead] == [(b"bad", 1), (b"worse", 2)]
        assert dead[0].reason == "bad input"
        assert "max_attempts" in dead[1].reason
        assert broker.stats(q).dead_letters == 2
        assert broker.redrive(q) == 2
        assert broker.dead_letters(q) == []
        with broker.consumer(q) as c:
            d = c.get(timeout=5)
            assert d is not None and d.attempt == 1
            d.ack()


def test_specs_are_stored_in_the_file(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        broker.declare(q, max_priority=3, lease=7.0)
    with workq.connect(sqlite_url) as broker:
        assert broker.spec(q).lease == 7.0
        with pytest.raises(workq.ConfigurationError, match="lease"):
            broker.declare(q, max_priority=3, lease=8.0)
        with pytest.raises(ValueError, match="max_priority"):
            broker.producer().publish(q, b"x", priority=5)
    with (
        workq.connect(sqlite_url) as broker,
        pytest.raises(workq.ConfigurationError, match=r"options colour .* it takes none"),
    ):
        broker.declare(qname(), colour="blue")


def test_stats_per_lane(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        broker.producer().publish_many(
            q, [workq.Message(b"a", tenant="t1"), workq.Message(b"b", tenant="t2", priority=2)]
        )
        with broker.consumer(q, tenants=["t1"]) as c:
            d = c.get(timeout=5)
            assert d is not None
            stats = broker.stats(q)
            by_lane = {
                (s.lane.tenant, s.lane.priority): (s.ready, s.in_flight) for s in stats.lanes
            }
            assert by_lane == {("t1", 0): (0, 1), ("t2", 2): (1, 0)}
            d.ack()


def test_two_connections_never_share_a_claim(sqlite_url: str) -> None:
    q = qname()
    n = 200
    with workq.connect(sqlite_url) as a, workq.connect(sqlite_url) as b:
        a.producer().publish_many(q, [str(i) for i in range(n)])
        seen: list[str] = []
        with a.consumer(q, prefetch=10) as ca, b.consumer(q, prefetch=10) as cb:
            while len(seen) < n:
                progressed = False
                for c in (ca, cb):
                    d = c.get(timeout=0.5)
                    if d is not None:
                        seen.append(d.text())
                        d.ack()
                        progressed = True
                assert progressed
    assert sorted(seen, key=int) == [str(i) for i in range(n)]


def test_publish_on_a_closed_broker_raises(sqlite_url: str) -> None:
    q = qname()
    broker = workq.connect(sqlite_url)
    broker.declare(q)
    p = broker.producer()
    broker.close()
    with pytest.raises(workq.Closed, match="its broker is closed"):
        p.publish(q, b"x")


def test_spec_lease_reaches_claims(sqlite_url: str) -> None:
    q = qname()
    with workq.connect(sqlite_url) as broker:
        spec = broker.declare(q, lease=5.0)
        broker.producer().publish(q, b"x")
        driver = broker.driver
        assert isinstance(driver, SqliteDriver)
        r = driver.open(spec, 1)
        got = r.receive([Lane(q)], 1, 5)
        row = (
            driver.db.conn()
            .execute(
                "SELECT visible_at - ? FROM workq_messages WHERE id = ?", (time.time(), got[0].id)
            )
            .fetchone()
        )
        assert 0 < row[0] <= 5.0
        r.close()


def test_a_lock_held_too_long_is_a_publish_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite://{path}?busy_timeout=0.05&publish_retries=2"
    with workq.connect(url) as broker:
        q = qname()
        broker.declare(q)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's stuck write
        try:
            with pytest.raises(workq.PublishError, match="locked"):
                broker.producer().publish(q, b"x")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        broker.producer().publish(q, b"y")  # the lock gone, publishing works again
        assert broker.stats(q).ready == 1
