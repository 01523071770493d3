"""The conformance suite every backend runs, ours or a third party's.

Subclass :class:`Conformance` (the sync API) and :class:`AsyncConformance` (workq.aio)
in your tests and give them a ``url`` fixture::

    from workq.testing.conformance import AsyncConformance, Conformance

    class TestMineSync(Conformance):
        @pytest.fixture
        def url(self) -> str:
            return "mine://..."

    class TestMineAsync(AsyncConformance):
        @pytest.fixture
        def url(self) -> str:
            return "mine://..."

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
import functools
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

__all__ = ["FEATURES", "OPT_IN", "AsyncConformance", "Conformance"]

#: Optional behaviours a backend declares in ``features``:
#: ``shared_dispatch``: any consumer can take any ready message (not a partitioned log);
#: ``exact_stats``: ``stats()`` counts ready messages exactly (not an estimate);
#: ``in_flight_stats``: ``stats()`` counts delivered, unsettled messages;
#: ``release_keeps_attempt``: a message given back unprocessed keeps its attempt number.
FEATURES = frozenset({"shared_dispatch", "exact_stats", "in_flight_stats", "release_keeps_attempt"})
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


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test method in a fresh event loop."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 300))

    return run


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


class Conformance(_Base):
    """The contract, through the sync API."""

    @pytest.fixture
    def broker(self, url: str) -> Iterator[workq.Broker]:
        with self.open_sync(url) as broker:
            yield broker

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
        with broker.consumer(queue, prefetch=4) as c:
            got = self.take_acked(c, 4)
        by_type = {d.headers["content-type"]: d for d in got}
        assert {d.body for d in got} >= {b"\x00raw"}
        assert any(d.text() == "text é" for d in got)
        assert any(d.body.startswith(b"{") and d.json() == {"a": [1, 2]} for d in got)
        jobs = [d.parse(Job) for d in got if b'"name"' in d.body]
        assert jobs == [Job(name="x", size=3)]
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
        broker.producer().publish(queue, "later")
        with broker.consumer(queue) as c:
            (d,) = self.take(c, 1)
            nacked = time.monotonic()
            d.nack(delay=DELAY)
            (d2,) = self.take(c, 1)
            assert time.monotonic() - nacked >= DELAY - 0.05
            assert d2.id == d.id and d2.attempt == 2
            d2.ack()

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
        self.need("exact_stats")
        broker.producer().publish_many(queue, ["a", "b", "c"])
        until(lambda: broker.stats(queue).ready == 3, what="3 ready")
        with broker.consumer(queue, prefetch=1) as c:
            (held,) = self.take(c, 1)
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
            workq.connect("nope://somewhere")
        with pytest.raises(workq.ConfigurationError, match="bogus"):
            workq.connect(with_query(url, "bogus=1"))

    def test_unsupported_body_type_raises_type_error(
        self, broker: workq.Broker, queue: str
    ) -> None:
        with pytest.raises(TypeError, match="bytes, str"):
            broker.producer().publish(queue, object())

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


class AsyncConformance(_Base):
    """The contract, through ``workq.aio``."""

    @staticmethod
    async def take(
        c: workq.aio.Consumer, n: int, timeout: float = WAIT
    ) -> list[workq.aio.Delivery]:
        got: list[workq.aio.Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            d = await c.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            if d is not None:
                got.append(d)
        assert len(got) == n, f"expected {n} deliveries within {timeout}s, got {len(got)}"
        return got

    async def take_acked(
        self, c: workq.aio.Consumer, n: int, timeout: float = WAIT
    ) -> list[workq.aio.Delivery]:
        got = []
        for _ in range(n):
            (d,) = await self.take(c, 1, timeout)
            await d.ack()
            got.append(d)
        return got

    @staticmethod
    async def until(check: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        deadline = time.monotonic() + WAIT
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {WAIT}s waiting for {what}")
            await asyncio.sleep(0.02)

    @aio
    async def test_round_trip_of_each_body_type(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            async with broker.producer() as p:
                await p.publish(queue, b"raw")
                await p.publish(queue, "text")
                await p.publish_many(queue, [{"a": 1}, Job(name="j", size=1)])
            async with broker.consumer(queue, prefetch=4) as c:
                got = await self.take_acked(c, 4)
        assert {d.body for d in got} >= {b"raw", b"text"}
        assert any(d.json() == {"a": 1} for d in got if d.body.startswith(b"{"))
        assert [d.parse(Job) for d in got if b'"name"' in d.body] == [Job(name="j", size=1)]

    @aio
    async def test_nack_delay_and_attempts(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            await broker.producer().publish(queue, "x", tenant="t", priority=2)
            async with broker.consumer(queue) as c:
                (d,) = await self.take(c, 1)
                assert (d.tenant, d.priority, d.attempt) == ("t", 2, 1)
                nacked = time.monotonic()
                await d.nack(delay=DELAY)
                (d2,) = await self.take(c, 1)
                assert time.monotonic() - nacked >= DELAY - 0.05
                assert (d2.id, d2.attempt, d2.redelivered) == (d.id, 2, True)
                await d2.ack()
                with pytest.raises(workq.AlreadySettled):
                    await d2.nack()

    @aio
    async def test_reject_max_attempts_and_redrive(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            await broker.declare(queue, max_attempts=1)
            await broker.producer().publish_many(queue, ["rejected", "exhausted"])
            async with broker.consumer(queue, prefetch=2) as c:
                for d in await self.take(c, 2):
                    if d.text() == "rejected":
                        await d.reject("bad input")
                    else:
                        await d.nack()

            async def two_dead() -> list[workq.DeadLetter]:
                dead = await broker.dead_letters(queue)
                return dead if len(dead) == 2 else []

            dead = await self.until(two_dead, "two dead letters")
            reasons = {x.body: x.reason for x in dead}
            assert "bad input" in reasons[b"rejected"]
            assert "max_attempts" in reasons[b"exhausted"]
            assert await broker.redrive(queue) == 2
            async with broker.consumer(queue, prefetch=2) as c:
                assert {d.body for d in await self.take_acked(c, 2)} == {b"rejected", b"exhausted"}
            assert await broker.dead_letters(queue) == []

    @aio
    async def test_priority_and_fairness(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            p = broker.producer()
            await p.publish_many(queue, [Message(f"a{i}", tenant="a") for i in range(30)])
            await p.publish_many(queue, [Message(f"b{i}", tenant="b") for i in range(3)])
            await p.publish(queue, "urgent", tenant="c", priority=9)
            async with broker.consumer(queue) as c:
                got = await self.take_acked(c, 10)
        assert got[0].body == b"urgent"
        assert [d.tenant for d in got[1:]].count("b") == 3

    @aio
    async def test_tenants_filter_and_new_lanes(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            p = broker.producer()
            await p.publish(queue, "b", tenant="b")
            async with broker.consumer(queue, tenants=["a"]) as c:
                assert await c.get(timeout=QUIET) is None
                await p.publish(queue, "a", tenant="a")
                (d,) = await self.take_acked(c, 1)
                assert d.tenant == "a"
            async with broker.consumer(queue) as c:
                (d,) = await self.take_acked(c, 1)
                assert d.tenant == "b"
                late = unique("late")
                await p.publish(queue, "late", tenant=late)
                (d,) = await self.take_acked(c, 1)
                assert d.tenant == late
            with pytest.raises(ValueError, match="tenant"):
                await p.publish(queue, "x", tenant="bad tenant")

    @aio
    async def test_prefetch_and_close_release(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            await broker.declare(queue, lease=120.0)
            await broker.producer().publish_many(queue, [str(i) for i in range(4)])
            async with broker.consumer(queue, prefetch=2) as c:
                held = await self.take(c, 2)
                assert await c.get(timeout=QUIET) is None
            async with broker.consumer(queue, prefetch=4) as c:
                again = await self.take_acked(c, 4)
        assert {d.id for d in held} <= {d.id for d in again}

    @aio
    async def test_worker_outcomes_and_stop(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            await broker.declare(queue, max_attempts=2, retry_delay=0.1)
            await broker.producer().publish_many(queue, ["ok", "fails", "reject"])
            calls: list[tuple[str, int]] = []

            async def handle(d: workq.aio.Delivery) -> None:
                calls.append((d.text(), d.attempt))
                if d.text() == "fails":
                    raise RuntimeError("broken")
                if d.text() == "reject":
                    raise workq.Reject("nope")

            worker = broker.worker(queue, handle, concurrency=2)
            task = asyncio.create_task(worker.run())

            async def settled() -> list[workq.DeadLetter]:
                dead = await broker.dead_letters(queue)
                return dead if len(dead) == 2 else []

            dead = await self.until(settled, "two dead letters")
            worker.stop()
            await asyncio.wait_for(task, WAIT)
        assert sorted(calls) == [("fails", 1), ("fails", 2), ("ok", 1), ("reject", 1)]
        reasons = sorted(x.reason for x in dead)
        assert "broken" in reasons[0] and reasons[1] == "nope"

    @aio
    async def test_worker_stop_releases_unstarted(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            await broker.declare(queue, lease=120.0)
            await broker.producer().publish_many(queue, [str(i) for i in range(3)])
            started, go = asyncio.Event(), asyncio.Event()
            done: list[str] = []

            async def handle(d: workq.aio.Delivery) -> None:
                started.set()
                await go.wait()
                done.append(d.id)

            worker = broker.worker(queue, handle, concurrency=1, prefetch=3)
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(started.wait(), WAIT)
            worker.stop()
            # As in the sync test: during the stop where dispatch is shared, else after.
            shared = broker.driver.capabilities.shared_dispatch
            if not shared:
                go.set()
                await asyncio.wait_for(task, WAIT)
            async with broker.consumer(queue, prefetch=3) as c:
                rest = await self.take_acked(c, 2)
                assert shared == (not done), "in-flight handler still running"
            go.set()
            await asyncio.wait_for(task, WAIT)
            assert len(done) == 1
        assert done[0] not in {d.id for d in rest}

    @aio
    async def test_bad_input(self, url: str, queue: str) -> None:
        with pytest.raises(workq.ConfigurationError, match="nope"):
            await workq.aio.connect("nope://x")
        with pytest.raises(workq.ConfigurationError, match="bogus"):
            await workq.aio.connect(with_query(url, "bogus=1"))
        async with await self.open_async(url) as broker:
            with pytest.raises(TypeError, match="bytes, str"):
                await broker.producer().publish(queue, {1, 2})
            await broker.declare(queue, max_attempts=3)
            with pytest.raises(workq.ConfigurationError, match="max_attempts"):
                await broker.declare(queue, max_attempts=4)

    @aio
    async def test_stats_and_release_is_not_an_attempt(self, url: str, queue: str) -> None:
        exact = "exact_stats" in self.features
        async with await self.open_async(url) as broker:
            await broker.declare(queue, max_attempts=2)
            async with broker.producer() as p:
                await p.publish_many(queue, ["a", "b"])

            async def ready(n: int) -> bool:
                return (await broker.stats(queue)).ready == n

            if exact:
                await self.until(lambda: ready(2), "2 ready")
            if "release_keeps_attempt" in self.features:
                # More releases than max_attempts: still never dead-lettered.
                for _ in range(3):
                    async with broker.consumer(queue, prefetch=1) as c:
                        (d,) = await self.take(c, 1)
                        assert d.attempt == 1
                        if exact:
                            await self.until(lambda: ready(1), "1 ready while one is held")
            async with broker.consumer(queue, prefetch=2) as c:
                got = await self.take(c, 2)
                await got[0].reject("stats test")
                await got[1].ack()

            async def dead() -> bool:
                return (await broker.stats(queue)).dead_letters == 1

            await self.until(dead, "1 dead letter")

    # -- interop ------------------------------------------------------------------

    @aio
    async def test_passive_declare_reads_and_creates_nothing(self, url: str, queue: str) -> None:
        async with await self.open_async(url) as broker:
            for _ in range(2):  # the first one made nothing that the second could find
                with pytest.raises(workq.QueueNotFound, match=queue):
                    await broker.declare(queue, passive=True)
            await broker.declare(queue, max_attempts=3)
            assert (await broker.declare(queue, passive=True)).max_attempts == 3

    @aio
    async def test_plain_producer_reaches_a_workq_consumer(self, url: str, queue: str) -> None:
        self.need("plain_producer")
        mid = await asyncio.to_thread(self.plain_publish, url, queue, b"plain", {"trace": "t-2"})
        async with await self.open_async(url) as broker, broker.consumer(queue) as c:
            (d,) = await self.take(c, 1)
            assert (d.id, d.body, d.headers["trace"]) == (mid, b"plain", "t-2")
            assert (d.tenant, d.attempt) == (None, 1)
            await d.ack()
