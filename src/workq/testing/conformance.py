"""The conformance suite every backend runs, ours or a third party's.

One list of scenarios runs through both twins: subclass :class:`Conformance` (the sync
API) and :class:`AsyncConformance` (``workq.aio``) in your tests and give them a ``url``
fixture::

    from workq.testing.conformance import AsyncConformance, Conformance

    class TestMineSync(Conformance):
        @pytest.fixture
        def url(self) -> str:
            return "mine://..."

    class TestMineAsync(AsyncConformance):
        @pytest.fixture
        def url(self) -> str:
            return "mine://..."

Each scenario is written once, against the sync API's names. :class:`Conformance` runs
it on a ``workq.Broker``; :class:`AsyncConformance` on a ``workq.aio.Broker`` living on an
event loop of its own thread, each call awaited there (a blocking view: the scenario's
handlers run through ``asyncio.to_thread`` from an async handler, since some block on
thread events). So every assertion and feature check applies to both twins alike.

Each test uses fresh queue names, so a shared broker needs no cleaning. Waits are
bounded polls (``WAIT`` seconds at most), never sleeps used as synchronisation.

A backend that is not reached by URL (or that wants its brokers built another way)
overrides :meth:`_Base.open_sync` and :meth:`_Base.open_async`. A backend that lacks an
optional behaviour leaves it out of ``features`` (see :data:`FEATURES`); the tests of
that behaviour are then skipped, saying which feature they need.

Interop (opt-in): a backend whose broker plain clients can write to adds
``"plain_producer"`` to ``features`` and overrides :meth:`_Base.plain_publish`, which
sends one message to the queue's default lane with the broker's own client; the suite
then checks a workq consumer reads it with its id, body and headers.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel

import workq
from workq import Message

__all__ = [
    "FEATURES",
    "OPT_IN",
    "AsyncConformance",
    "Conformance",
    "Job",
    "unique",
    "until",
    "with_query",
]

#: Optional behaviours a backend declares in ``features``:
#: ``shared_dispatch``: any consumer can take any ready message (not a partitioned log);
#: ``exact_stats``: ``stats()`` counts ready messages exactly (not an estimate);
#: ``in_flight_stats``: ``stats()`` counts delivered, unsettled messages;
#: ``release_keeps_attempt``: a message given back unprocessed keeps its attempt number;
#: ``cross_tenant_priority``: a higher priority goes first across tenants too, not only
#: within one tenant's lane (RabbitMQ classic queues order priorities per queue).
FEATURES = frozenset(
    {
        "shared_dispatch",
        "exact_stats",
        "in_flight_stats",
        "release_keeps_attempt",
        "cross_tenant_priority",
    }
)

#: Behaviours a backend opts into (they need a hook of its own, so ``features = FEATURES``
#: leaves them out): ``plain_producer``: :meth:`_Base.plain_publish` sends a message with
#: the broker's own client.
OPT_IN = frozenset({"plain_producer"})

#: Upper bound on any wait in the suite; generous for group rebalances and lease expiry.
WAIT = 30.0
#: The delay used for nack(delay) and delayed publish; SQS counts whole seconds.
DELAY = 2.0
#: How long "nothing arrives" is watched for.
QUIET = 1.5

T = TypeVar("T")


class Job(BaseModel):
    name: str
    size: int


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def with_query(url: str, extra: str) -> str:
    return url + ("&" if urlsplit(url).query else "?") + extra


def until(check: Callable[[], T], timeout: float = WAIT, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class _Base:
    #: What this backend does of :data:`FEATURES`; ``shared_dispatch`` is also taken
    #: from the driver's capabilities.
    features: ClassVar[frozenset[str]] = FEATURES

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError("subclasses provide a `url` fixture for their broker")

    def open_sync(self, url: str) -> workq.Broker:
        """Build the sync broker a test uses (override to build it other than by URL)."""
        return workq.connect(url)

    async def open_async(self, url: str) -> workq.aio.Broker:
        """Build the async broker a test uses (override to build it other than by URL)."""
        return await workq.aio.connect(url)

    def connect(self, url: str) -> None:
        """Connect with this twin's ``connect`` and close again (for bad-URL checks)."""
        raise NotImplementedError

    def need(self, feature: str, broker: Any = None) -> None:
        """Skip unless this backend declares ``feature``."""
        assert feature in FEATURES | OPT_IN, f"unknown conformance feature {feature!r}"
        has = feature in self.features
        if feature == "shared_dispatch" and broker is not None:
            has = has and broker.driver.capabilities.shared_dispatch
        if not has:
            pytest.skip(f"the backend does not declare the {feature!r} feature")

    @pytest.fixture
    def queue(self) -> str:
        return unique()

    def plain_publish(self, url: str, queue: str, body: bytes, headers: dict[str, str]) -> str:
        """Send ``body`` with ``headers`` to the default lane of ``queue`` with the
        broker's own client, as a service that knows nothing of workq would (making the
        queue or topic first if a plain client would have to); return the id the
        delivery must have. Backends with ``"plain_producer"`` in ``features`` override it.
        """
        raise NotImplementedError("declare 'plain_producer' only with a plain_publish hook")


class _Scenarios(_Base):
    """The contract: every scenario, written once, run by both twins (see the module)."""

    @pytest.fixture
    def broker(self, url: str) -> Iterator[workq.Broker]:
        raise NotImplementedError("Conformance and AsyncConformance provide `broker`")

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def take(c: workq.Consumer, n: int, timeout: float = WAIT) -> list[workq.Delivery]:
        got: list[workq.Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            d = c.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            if d is not None:
                got.append(d)
        assert len(got) == n, f"expected {n} deliveries within {timeout}s, got {len(got)}"
        return got

    @staticmethod
    def take_acked(c: workq.Consumer, n: int, timeout: float = WAIT) -> list[workq.Delivery]:
        got: list[workq.Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            d = c.get(timeout=1.0)
            if d is not None:
                d.ack()
                got.append(d)
        assert len(got) == n, f"expected {n} deliveries within {timeout}s, got {len(got)}"
        return got

    # -- publish and consume ---------------------------------------------------

    def test_round_trip_of_each_body_type(self, broker: workq.Broker, queue: str) -> None:
        with broker.producer() as p:
            p.publish(queue, b"\x00raw")
            p.publish(queue, "text é")
            p.publish(queue, {"a": [1, 2]})
            p.publish(queue, Job(name="x", size=3))
            p.publish_many(queue, [{"a": 1}, Job(name="j", size=1)])
        with broker.consumer(queue, prefetch=6) as c:
            got = self.take_acked(c, 6)
        by_type = {d.headers["content-type"]: d for d in got}
        assert {d.body for d in got} >= {b"\x00raw"}
        assert any(d.text() == "text é" for d in got)
        assert any(d.body.startswith(b"{") and d.json() == {"a": [1, 2]} for d in got)
        assert any(d.body.startswith(b"{") and d.json() == {"a": 1} for d in got)
        jobs = [d.parse(Job) for d in got if b'"name"' in d.body]
        assert sorted(jobs, key=lambda j: j.name) == [Job(name="j", size=1), Job(name="x", size=3)]
        assert "application/json" in by_type

    def test_delivery_attributes(self, broker: workq.Broker, queue: str) -> None:
        before = time.time()
        with broker.producer() as p:
            mid = p.publish(
                queue, "x", tenant="acme", priority=3, headers={"trace": "t1"}, message_id="m-1"
            )
        assert mid == "m-1"
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            assert (d.id, d.queue, d.tenant, d.priority) == ("m-1", queue, "acme", 3)
            assert d.headers["trace"] == "t1"
            assert d.attempt == 1 and d.redelivered is False
            assert before - 5 <= d.enqueued_at.timestamp() <= time.time() + 5
            d.ack()

    def test_publish_many_returns_ids_in_order(self, broker: workq.Broker, queue: str) -> None:
        with broker.producer() as p:
            ids = p.publish_many(queue, [b"a", Message(b"b", message_id="id-b"), "c"])
        assert len(ids) == 3 and ids[1] == "id-b" and len(set(ids)) == 3
        with broker.consumer(queue, prefetch=3) as c:
            got = self.take_acked(c, 3)
        assert {d.id for d in got} == set(ids)

    def test_ack_removes(self, broker: workq.Broker, queue: str) -> None:
        broker.declare(queue, lease=2.0)
        broker.producer().publish(queue, "once")
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            d.ack()
            # Past the lease: an acked message must not come back.
            assert c.get(timeout=2.0 + QUIET) is None

    def test_nack_redelivers_with_attempt_plus_one(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish(queue, "again")
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            assert d.attempt == 1
            d.nack()
            (d2,) = self.take(c, 1)
            assert (d2.id, d2.attempt, d2.redelivered) == (d.id, 2, True)
            d2.ack()

    def test_nack_delay_is_not_redelivered_before_delay(
        self, broker: workq.Broker, queue: str
    ) -> None:
        broker.producer().publish(queue, "later", tenant="t", priority=2)
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            assert (d.tenant, d.priority, d.attempt) == ("t", 2, 1)
            nacked = time.monotonic()
            d.nack(delay=DELAY)
            (d2,) = self.take(c, 1)
            assert time.monotonic() - nacked >= DELAY - 0.05
            assert (d2.id, d2.attempt, d2.redelivered) == (d.id, 2, True)
            d2.ack()
            with pytest.raises(workq.AlreadySettled):
                d2.nack()

    def test_delayed_publish_waits(self, broker: workq.Broker, queue: str) -> None:
        sent = time.monotonic()
        broker.producer().publish(queue, "later", delay=DELAY)
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            assert time.monotonic() - sent >= DELAY - 0.05
            d.ack()

    def test_settling_twice_raises(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish(queue, "x")
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            d.ack()
            for settle in (d.ack, d.nack, lambda: d.reject("r")):
                with pytest.raises(workq.AlreadySettled):
                    settle()

    # -- dead letters ----------------------------------------------------------

    def test_reject_dead_letters_with_reason(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish(queue, "bad", tenant="acme")
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            d.reject(reason="bad input")
        dead = until(lambda: broker.dead_letters(queue), what="a dead letter")
        assert [(x.id, x.body, x.tenant) for x in dead] == [(d.id, b"bad", "acme")]
        assert "bad input" in dead[0].reason
        assert [x.id for x in broker.dead_letters(queue)] == [d.id], "reading removed it"

    def test_max_attempts_dead_letters_then_redrive(self, broker: workq.Broker, queue: str) -> None:
        broker.declare(queue, max_attempts=2)
        broker.producer().publish(queue, "poison")
        with broker.consumer(queue) as c:
            self.take(c, 1)[0].nack()
            last = self.take(c, 1)[0]
            assert last.attempt == 2
            last.nack()
            assert c.get(timeout=QUIET) is None
        dead = until(lambda: broker.dead_letters(queue), what="a dead letter")
        assert len(dead) == 1 and "max_attempts" in dead[0].reason
        assert broker.redrive(queue) == 1
        with broker.consumer(queue) as c:
            (back,) = self.take(c, 1)
            assert back.body == b"poison" and back.attempt == 1
            back.ack()
        assert broker.dead_letters(queue) == []

    def test_reject_and_exhausted_then_redrive_together(
        self, broker: workq.Broker, queue: str
    ) -> None:
        broker.declare(queue, max_attempts=1)
        broker.producer().publish_many(queue, ["rejected", "exhausted"])
        with broker.consumer(queue, prefetch=2) as c:
            for d in self.take(c, 2):
                if d.text() == "rejected":
                    d.reject("bad input")
                else:
                    d.nack()

        def two_dead() -> list[workq.DeadLetter]:
            dead = broker.dead_letters(queue)
            return dead if len(dead) == 2 else []

        dead = until(two_dead, what="two dead letters")
        reasons = {x.body: x.reason for x in dead}
        assert "bad input" in reasons[b"rejected"]
        assert "max_attempts" in reasons[b"exhausted"]
        assert broker.redrive(queue) == 2
        with broker.consumer(queue, prefetch=2) as c:
            assert {d.body for d in self.take_acked(c, 2)} == {b"rejected", b"exhausted"}
        assert broker.dead_letters(queue) == []

    # -- priority and tenants --------------------------------------------------

    def test_higher_priority_first(self, broker: workq.Broker, queue: str) -> None:
        priorities = [1, 5, 9, 0, 5, 9, 1, 0, 7]
        broker.producer().publish_many(queue, [Message(str(p), priority=p) for p in priorities])
        with broker.consumer(queue, prefetch=1) as c:
            got = [d.priority for d in self.take_acked(c, len(priorities))]
        assert got == sorted(priorities, reverse=True)

    def test_tenant_isolation(self, broker: workq.Broker, queue: str) -> None:
        with broker.producer() as p:
            p.publish_many(queue, [Message(f"a{i}", tenant="a") for i in range(3)])
            p.publish_many(queue, [Message(f"b{i}", tenant="b") for i in range(3)])
        with broker.consumer(queue, prefetch=10, tenants=["a"]) as c:
            got = self.take_acked(c, 3)
            assert c.get(timeout=QUIET) is None
        assert {d.tenant for d in got} == {"a"}
        with broker.consumer(queue, prefetch=10, tenants=["b"]) as c:
            assert {d.tenant for d in self.take_acked(c, 3)} == {"b"}

    def test_tenant_fairness(self, broker: workq.Broker, queue: str) -> None:
        with broker.producer() as p:
            p.publish_many(queue, [Message(f"a{i}", tenant="a") for i in range(100)])
            p.publish_many(queue, [Message(f"b{i}", tenant="b") for i in range(5)])
        with broker.consumer(queue) as c:
            first = [d.tenant for d in self.take_acked(c, 15)]
        assert first.count("b") == 5, f"b's 5 messages should be in the first 15, got {first}"

    def test_priority_and_fairness(self, broker: workq.Broker, queue: str) -> None:
        self.need("cross_tenant_priority")
        with broker.producer() as p:
            p.publish_many(queue, [Message(f"a{i}", tenant="a") for i in range(30)])
            p.publish_many(queue, [Message(f"b{i}", tenant="b") for i in range(3)])
            p.publish(queue, "urgent", tenant="c", priority=9)
        with broker.consumer(queue) as c:
            got = self.take_acked(c, 10)
        assert got[0].body == b"urgent"
        assert [d.tenant for d in got[1:]].count("b") == 3

    def test_tenants_filter_and_new_lanes(self, broker: workq.Broker, queue: str) -> None:
        p = broker.producer()
        p.publish(queue, "b", tenant="b")
        with broker.consumer(queue, tenants=["a"]) as c:
            assert c.get(timeout=QUIET) is None
            p.publish(queue, "a", tenant="a")  # a lane made after the consumer started
            (d,) = self.take_acked(c, 1)
            assert d.tenant == "a"
        with broker.consumer(queue) as c:
            (d,) = self.take_acked(c, 1)
            assert d.tenant == "b"
            late = unique("late")
            p.publish(queue, "late", tenant=late)
            (d,) = self.take_acked(c, 1)
            assert d.tenant == late
        with pytest.raises(ValueError, match="tenant"):
            p.publish(queue, "x", tenant="bad tenant")

    def test_new_tenant_lane_is_consumed(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish(queue, "early", tenant="early")
        with broker.consumer(queue) as c:
            self.take_acked(c, 1)
            broker.producer().publish(queue, "late", tenant=unique("late"))
            (late,) = self.take_acked(c, 1)
        assert late.body == b"late"

    def test_invalid_tenant_raises_value_error(self, broker: workq.Broker, queue: str) -> None:
        with pytest.raises(ValueError, match="tenant"):
            broker.producer().publish(queue, "x", tenant="not ok/")
        with pytest.raises(ValueError, match="tenant"):
            broker.consumer(queue, tenants=["x" * 65])

    # -- prefetch and dispatch -------------------------------------------------

    def test_prefetch_bounds_unsettled(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish_many(queue, [str(i) for i in range(8)])
        with broker.consumer(queue, prefetch=3) as c:
            held = self.take(c, 3)
            assert c.get(timeout=QUIET) is None, "a 4th delivery beyond prefetch=3"
            held[0].ack()
            held.append(self.take(c, 1)[0])
            assert c.get(timeout=0.5) is None
            for d in held[1:]:
                d.ack()

    def test_fast_consumer_gets_most(self, broker: workq.Broker, queue: str) -> None:
        if not broker.driver.capabilities.shared_dispatch:
            pytest.skip(
                f"{broker.backend}: a partition's messages go to its one owner, so a slow "
                "consumer holds up its partitions (documented; share groups would change it)"
            )
        broker.producer().publish_many(queue, [str(i) for i in range(20)])
        counts = {"fast": 0, "slow": 0}
        stop = threading.Event()

        def consume(name: str, pause: float) -> None:
            with broker.consumer(queue, prefetch=1) as c:
                while not stop.is_set():
                    d = c.get(timeout=0.2)
                    if d is not None:
                        stop.wait(pause)  # the slow consumer's "work"
                        d.ack()
                        counts[name] += 1

        threads = [
            threading.Thread(target=consume, args=("slow", 1.0)),
            threading.Thread(target=consume, args=("fast", 0.0)),
        ]
        for t in threads:
            t.start()
        try:
            until(lambda: counts["fast"] + counts["slow"] >= 20, what="all 20 processed")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert counts["fast"] > counts["slow"] * 2, counts

    def test_close_returns_unsettled_promptly(self, broker: workq.Broker, queue: str) -> None:
        # A long lease: if close did not release, the message would stay away for it.
        broker.declare(queue, lease=120.0)
        broker.producer().publish_many(queue, ["one", "two"])
        with broker.consumer(queue, prefetch=2) as c:
            held = self.take(c, 2)
        with broker.consumer(queue, prefetch=2) as c2:
            again = self.take_acked(c2, 2)
        assert {d.id for d in again} == {d.id for d in held}

    # -- stats, leases, releases -------------------------------------------------

    def test_stats_count_ready_in_flight_and_dead_letters(
        self, broker: workq.Broker, queue: str
    ) -> None:
        # Without exact_stats, ready counts are estimates: only dead letters are checked.
        exact = "exact_stats" in self.features
        broker.producer().publish_many(queue, ["a", "b", "c"])
        if exact:
            until(lambda: broker.stats(queue).ready == 3, what="3 ready")
        with broker.consumer(queue, prefetch=1) as c:
            (held,) = self.take(c, 1)
            if exact:
                until(lambda: broker.stats(queue).ready == 2, what="2 ready")
            stats = broker.stats(queue)
            if "in_flight_stats" in self.features:
                until(lambda: broker.stats(queue).in_flight == 1, what="1 in flight")
            held.reject("stats test")
            until(lambda: broker.stats(queue).dead_letters == 1, what="1 dead letter")
        assert stats.queue == queue
        assert sum(lane.ready for lane in stats.lanes) == stats.ready

    def test_lease_is_extended_past_the_lease(self, broker: workq.Broker, queue: str) -> None:
        # On a partitioned log a second consumer rebalances partitions: not about leases.
        self.need("shared_dispatch", broker)
        lease = DELAY
        broker.declare(queue, lease=lease)
        broker.producer().publish(queue, "long job")
        with broker.consumer(queue) as c, broker.consumer(queue) as other:
            (d,) = self.take(c, 1)
            # Held for well past its lease: the keeper extends it, nobody else gets it.
            assert other.get(timeout=lease * 2.5) is None
            d.ack()
        with broker.consumer(queue) as c:
            assert c.get(timeout=QUIET) is None

    def test_release_is_not_an_attempt(self, broker: workq.Broker, queue: str) -> None:
        self.need("release_keeps_attempt")
        broker.declare(queue, max_attempts=2)
        broker.producer().publish(queue, "given back")
        for _ in range(3):  # more releases than max_attempts: still never dead-lettered
            with broker.consumer(queue) as c:
                (d,) = self.take(c, 1)
                assert d.attempt == 1
                if "exact_stats" in self.features:
                    until(lambda: broker.stats(queue).ready == 0, what="0 ready while held")
        with broker.consumer(queue, prefetch=5) as c:
            (d,) = self.take(c, 1)
            assert d.attempt == 1 and not d.redelivered
            d.ack()
        assert broker.dead_letters(queue) == []

    # -- worker ----------------------------------------------------------------

    def _run(self, worker: workq.Worker) -> threading.Thread:
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.wait_running()
        return thread

    def test_worker_acks_on_return(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish_many(queue, [str(i) for i in range(10)])
        seen: list[str] = []
        lock = threading.Lock()

        def handle(d: workq.Delivery) -> None:
            with lock:
                seen.append(d.text())

        worker = broker.worker(queue, handle, concurrency=4)
        thread = self._run(worker)
        until(lambda: len(seen) >= 10, what="10 handled")
        worker.stop()
        thread.join(WAIT)
        assert sorted(seen) == [str(i) for i in range(10)]
        with broker.consumer(queue) as c:
            assert c.get(timeout=QUIET) is None

    def test_worker_retries_then_dead_letters(self, broker: workq.Broker, queue: str) -> None:
        broker.declare(queue, max_attempts=3, retry_delay=0.1)
        broker.producer().publish(queue, "always fails")
        attempts: list[int] = []

        def handle(d: workq.Delivery) -> None:
            attempts.append(d.attempt)
            raise ValueError("cannot do it")

        worker = broker.worker(queue, handle, concurrency=1)
        thread = self._run(worker)
        dead = until(lambda: broker.dead_letters(queue), what="a dead letter")
        worker.stop()
        thread.join(WAIT)
        assert attempts == [1, 2, 3]
        assert "ValueError" in dead[0].reason and "cannot do it" in dead[0].reason

    def test_worker_retry_and_reject(self, broker: workq.Broker, queue: str) -> None:
        broker.producer().publish_many(queue, ["retry", "reject"])
        calls: list[tuple[str, int]] = []

        def handle(d: workq.Delivery) -> None:
            calls.append((d.text(), d.attempt))
            if d.text() == "reject":
                raise workq.Reject("not for us")
            if d.attempt == 1:
                raise workq.Retry(delay=0.0)

        worker = broker.worker(queue, handle, concurrency=2)
        thread = self._run(worker)
        until(lambda: ("retry", 2) in calls and broker.dead_letters(queue), what="both handled")
        worker.stop()
        thread.join(WAIT)
        assert [x.reason for x in broker.dead_letters(queue)] == ["not for us"]
        assert sorted(calls) == [("reject", 1), ("retry", 1), ("retry", 2)]

    def test_worker_stop_finishes_in_flight_and_releases_the_rest(
        self, broker: workq.Broker, queue: str
    ) -> None:
        broker.declare(queue, lease=120.0)
        broker.producer().publish_many(queue, [str(i) for i in range(4)])
        started, go = threading.Event(), threading.Event()
        done: list[str] = []

        def handle(d: workq.Delivery) -> None:
            started.set()
            go.wait(WAIT)
            done.append(d.id)

        worker = broker.worker(queue, handle, concurrency=1, prefetch=4, shutdown_timeout=WAIT)
        thread = self._run(worker)
        assert started.wait(WAIT)
        worker.stop()
        # Where any consumer can take any message, the unstarted three come back while
        # the in-flight one still runs. On a partitioned log a new consumer would take
        # over the in-flight one's partition too, so there it is checked after the stop.
        shared = broker.driver.capabilities.shared_dispatch
        if not shared:
            go.set()
            thread.join(WAIT)
        with broker.consumer(queue, prefetch=4) as c:
            rest = self.take_acked(c, 3)
            if shared:
                assert not done, "the in-flight handler should still be running"
                go.set()
                thread.join(WAIT)
            assert not thread.is_alive() and len(done) == 1
            assert c.get(timeout=QUIET) is None
        assert done[0] not in {d.id for d in rest}

    # -- configuration and bad input ------------------------------------------

    def test_bad_url_raises_configuration_error(self, url: str) -> None:
        with pytest.raises(workq.ConfigurationError, match="nope"):
            self.connect("nope://somewhere")
        with pytest.raises(workq.ConfigurationError, match="bogus"):
            self.connect(with_query(url, "bogus=1"))

    def test_unsupported_body_type_raises_type_error(
        self, broker: workq.Broker, queue: str
    ) -> None:
        for body in (object(), {1, 2}):
            with pytest.raises(TypeError, match="bytes, str"):
                broker.producer().publish(queue, body)

    def test_declare_is_idempotent_and_conflicts_are_named(
        self, broker: workq.Broker, queue: str
    ) -> None:
        spec = broker.declare(queue, max_attempts=3)
        assert broker.declare(queue, max_attempts=3) == spec
        with pytest.raises(workq.ConfigurationError, match="max_attempts"):
            broker.declare(queue, max_attempts=4)

    # -- interop ------------------------------------------------------------------

    def test_passive_declare_reads_and_creates_nothing(
        self, broker: workq.Broker, queue: str
    ) -> None:
        for _ in range(2):  # the first one made nothing that the second could find
            with pytest.raises(workq.QueueNotFound, match=queue):
                broker.declare(queue, passive=True)
        broker.declare(queue, max_attempts=3)
        assert broker.declare(queue, passive=True).max_attempts == 3

    def test_plain_producer_reaches_a_workq_consumer(
        self, url: str, broker: workq.Broker, queue: str
    ) -> None:
        self.need("plain_producer")
        mid = self.plain_publish(url, queue, b'{"n": 1}', {"trace": "t-1"})
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            assert (d.id, d.json(), d.headers["trace"]) == (mid, {"n": 1}, "t-1")
            assert (d.tenant, d.attempt) == (None, 1)
            d.ack()


class Conformance(_Scenarios):
    """The contract, through the sync API."""

    @pytest.fixture
    def broker(self, url: str) -> Iterator[workq.Broker]:
        with self.open_sync(url) as broker:
            yield broker

    def connect(self, url: str) -> None:
        workq.connect(url).close()


class AsyncConformance(_Scenarios):
    """The contract, through ``workq.aio``: the same scenarios as :class:`Conformance`."""

    @pytest.fixture
    def broker(self, url: str) -> Iterator[workq.Broker]:
        loop = _Loop()
        try:
            view = _AioBroker(loop.run(self.open_async(url)), loop)
            with view:
                # The view has the sync broker's methods; scenarios are typed against it.
                yield view  # type: ignore[misc]
        finally:
            loop.close()

    def connect(self, url: str) -> None:
        async def connect_and_close() -> None:
            await (await workq.aio.connect(url)).close()

        asyncio.run(connect_and_close())


# -- the blocking view of workq.aio that AsyncConformance runs the scenarios on -------

#: Bound on one awaited call of the view (a worker's run() is bounded by the scenario).
CALL_TIMEOUT = 300.0


class _Loop:
    """An event loop running on a thread of its own; calls wait for their result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="workq-conformance-aio", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = CALL_TIMEOUT) -> T:
        """Await ``coro`` on the loop; its result, or what it raised."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Call a plain function on the loop's thread (objects bound to the loop are
        made there, as in an async program)."""

        async def on_loop() -> T:
            return fn()

        return self.run(on_loop())

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(drain(), WAIT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()


class _AioDelivery:
    """A ``workq.aio.Delivery`` whose settling calls wait."""

    def __init__(self, delivery: workq.aio.Delivery, loop: _Loop) -> None:
        self._delivery = delivery
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._delivery, name)

    def ack(self) -> None:
        self._loop.run(self._delivery.ack())

    def nack(self, delay: float | None = None) -> None:
        self._loop.run(self._delivery.nack(delay))

    def reject(self, reason: str = "rejected") -> None:
        self._loop.run(self._delivery.reject(reason))


class _AioConsumer:
    """What the async ``broker.consumer()`` returns; ``with`` it to open the consumer."""

    def __init__(self, context: Any, loop: _Loop) -> None:
        self._context = context  # awaitable, and an async context manager
        self._loop = loop
        self._consumer: workq.aio.Consumer | None = None

    def get(self, timeout: float | None = 1.0) -> _AioDelivery | None:
        assert self._consumer is not None, "use the consumer in a with block"
        d = self._loop.run(self._consumer.get(timeout=timeout))
        return None if d is None else _AioDelivery(d, self._loop)

    def __enter__(self) -> _AioConsumer:
        self._consumer = self._loop.run(self._context.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.run(self._context.__aexit__(*exc))


class _AioProducer:
    def __init__(self, producer: workq.aio.Producer, loop: _Loop) -> None:
        self._producer = producer
        self._loop = loop

    def publish(self, queue: str, body: Any, **options: Any) -> str:
        return self._loop.run(self._producer.publish(queue, body, **options))

    def publish_many(self, queue: str, messages: Any) -> list[str]:
        return self._loop.run(self._producer.publish_many(queue, messages))

    def close(self) -> None:
        self._loop.run(self._producer.close())

    def __enter__(self) -> _AioProducer:
        self._loop.run(self._producer.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.run(self._producer.__aexit__(*exc))


class _AioWorker:
    def __init__(self, worker: workq.aio.Worker, loop: _Loop) -> None:
        self._worker = worker
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._worker, name)

    def run(self) -> None:
        self._loop.run(self._worker.run(), timeout=None)

    def stop(self) -> None:
        self._worker.stop()  # thread-safe, as workers document

    def wait_running(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._worker.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


class _AioBroker:
    """A ``workq.aio.Broker`` with the sync broker's methods, each awaited on ``loop``."""

    def __init__(self, broker: workq.aio.Broker, loop: _Loop) -> None:
        self._broker = broker
        self._loop = loop
        self.driver = broker.driver
        self.backend = broker.backend

    def declare(self, queue: str, **settings: Any) -> workq.QueueSpec:
        return self._loop.run(self._broker.declare(queue, **settings))

    def producer(self) -> _AioProducer:
        return _AioProducer(self._loop.call(self._broker.producer), self._loop)

    def consumer(self, queue: str, *args: Any, **kwargs: Any) -> _AioConsumer:
        made = self._loop.call(lambda: self._broker.consumer(queue, *args, **kwargs))
        return _AioConsumer(made, self._loop)

    def worker(
        self, queue: str, handler: Callable[[Any], Any], *args: Any, **kwargs: Any
    ) -> _AioWorker:
        async def on_a_thread(d: workq.aio.Delivery) -> Any:
            # Scenario handlers may block on thread events: never on the loop.
            return await asyncio.to_thread(handler, d)

        made = self._loop.call(lambda: self._broker.worker(queue, on_a_thread, *args, **kwargs))
        return _AioWorker(made, self._loop)

    def dead_letters(self, queue: str, limit: int = 100) -> list[workq.DeadLetter]:
        return self._loop.run(self._broker.dead_letters(queue, limit=limit))

    def redrive(self, queue: str) -> int:
        return self._loop.run(self._broker.redrive(queue))

    def stats(self, queue: str) -> workq.QueueStats:
        return self._loop.run(self._broker.stats(queue))

    def close(self) -> None:
        self._loop.run(self._broker.close())

    def __enter__(self) -> _AioBroker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
