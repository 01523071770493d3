"""The pika connection of the sync driver: one I/O thread that owns it, and its watchdog.

pika is not thread-safe, so one I/O thread per driver owns the connection and every
channel; other threads hand it work and wait on a future. Publishes are pipelined:
the I/O thread sends a whole batch, and publisher confirms settle it as they arrive
(the bookkeeping of those is ``confirms.py``).

Exceptions, for latency: a small publish whose queues are declared, and an ack, are
written on the caller's own thread (``publish_here``, ``here``) when the connection is
free, instead of costing a wake-up of the I/O thread first. So that it can be free, the
I/O thread waits for events outside pika (``wait_events``) and holds the connection
(``_lock``) only while it works. And a consumer waiting for its next delivery reads the
connection itself (``lead``) while the I/O thread waits for commands only: at prefetch 1
a message then costs no thread hand-off at all, as in a single-threaded client.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import pika
import pika.exceptions

from ...errors import BrokerUnavailable, WorkqError
from ...retrying import CONNECT
from .codec import Envelope
from .confirms import Batch, Confirms
from .connection import CLOSE_TIMEOUT, Deadline, connect_failed, endpoints, tls_context
from .frames import (
    Wire,
    abort,
    enable_confirms,
    idle_budget,
    read_now,
    received_bytes,
    wait_events,
    wait_led,
)
from .settings import RabbitMQSettings
from .topology import Declared, Registry

__all__ = [
    "CONNECTION_ERRORS",
    "GONE",
    "IOThread",
    "connection_parameters",
]

log = logging.getLogger("workq.rabbitmq")
T = TypeVar("T")

#: How often the watchdog looks for a stuck command.
WATCH_EVERY = 0.25
#: The longest the I/O thread waits for events before it looks again.
IDLE_WAIT = 1.0
#: How long a publisher waits for the connection before handing its publish to the
#: I/O thread instead (see ``IOThread.publish_here``).
HERE_WAIT = 0.002
#: The longest the I/O thread leaves the connection to a leading caller (see
#: ``IOThread.lead``) before it looks again.
PARK = 0.05

#: Errors meaning the connection (not just one call) is gone.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)
#: Errors after which the broker already has back whatever a closing receiver held.
GONE: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECTION_ERRORS)


def connection_parameters(
    settings: RabbitMQSettings, budget: float | None = None
) -> list[pika.ConnectionParameters]:
    """One parameter set per host, in failover order, sharing ``budget`` seconds
    (default ``connect_timeout``) for one pass over them all."""
    hosts = endpoints(settings)
    timeout = max((settings.connect_timeout if budget is None else budget) / len(hosts), 0.1)
    out = []
    credentials = pika.PlainCredentials(settings.username, settings.password.get_secret_value())
    for host, port in hosts:
        ssl_options = None
        if settings.tls:
            ssl_options = pika.SSLOptions(tls_context(settings), server_hostname=host)
        out.append(
            pika.ConnectionParameters(
                host=host,
                port=port,
                virtual_host=settings.vhost,
                credentials=credentials,
                heartbeat=settings.heartbeat,
                blocked_connection_timeout=settings.publish_timeout,
                connection_attempts=1,
                socket_timeout=timeout,
                stack_timeout=timeout,
                ssl_options=ssl_options,
            )
        )
    return out


def _noop() -> None:
    pass


def _close_quietly(channel: Any) -> None:
    if channel.is_open:
        with contextlib.suppress(Exception):
            channel.close()


#: Marks a command nobody waits for (see ``_IO.post``).
_POSTED: Future[Any] = Future()


class IOThread:
    """The one thread that touches pika: a command queue served between event pumps."""

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.conn: Any = None
        self.generation = 0
        self._cmds: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        #: Held by whichever thread uses pika: the I/O thread while it works (not while
        #: it waits for events), or a publisher in ``publish_here``.
        self._lock = threading.Lock()
        self._woken = False
        self._closed = False
        #: A caller's thread reads the connection (see ``lead``); the I/O thread waits
        #: for commands only (``_parked``) unless others wait on the connection.
        self._leader: threading.Thread | None = None
        self._parked = False
        #: Wakes the leader's wait alone (``wake_leader``): a wake-up through pika's
        #: own pipe could be read by the I/O thread first, and the leader sleep on.
        self._lead_r, self._lead_w = os.pipe()
        os.set_blocking(self._lead_r, False)
        os.set_blocking(self._lead_w, False)
        self._waiting = 0
        self._admin: Any = None
        self._pub: Any = None
        #: The caller-thread writer of the confirm channel ``_wire_of`` (its method
        #: frames cached), made again for a new channel.
        self._wire: Wire | None = None
        self._wire_of: Any = None
        self.confirms = Confirms()
        self.declared = Declared()
        self.regs: dict[str, Registry] = {}
        self.on_lost: list[Callable[[], None]] = []
        #: A command running longer than this is stuck: the watchdog cuts the connection.
        self.stuck_after = max(settings.publish_timeout, 1.0)
        self._busy = False
        self._close_by: float | None = None
        self._watch_stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workq-rabbitmq-io", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="workq-rabbitmq-watch", daemon=True).start()

    # -- running work on the I/O thread -----------------------------------------------

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        if threading.current_thread() is self._thread:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        if not self._enqueue(fn, fut):
            raise BrokerUnavailable(f"the connection to {self.settings.redacted_url()} is closed")
        return fut

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread without waiting for it (errors are logged)."""
        if threading.current_thread() is self._thread:
            fn()
        else:
            self._enqueue(fn, _POSTED)

    def _enqueue(self, fn: Callable[[], Any], fut: Future[Any]) -> bool:
        """Queue a command and wake the I/O thread; False once closed."""
        with self._cond:
            if self._closed:
                return False
            self._cmds.append((fn, fut))
            conn, wake = self.conn, not self._woken
            self._woken = True
            self._cond.notify()
        if conn is not None and wake:
            with contextlib.suppress(Exception):
                conn.add_callback_threadsafe(_noop)
        return True

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the I/O thread and return its result, within ``timeout``
        (default: one connect and one stuck command, so no call ever waits forever)."""
        if timeout is None:
            timeout = self.settings.connect_timeout + self.stuck_after + WATCH_EVERY * 2
        try:
            return self.submit(fn).result(timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self.settings.redacted_url()} did not answer within "
                f"{timeout}s; check that the broker and its queues' nodes are healthy"
            ) from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self.settings.redacted_url()} refused: {exc.reply_code} "
                f"{exc.reply_text}; retry once the broker is healthy"
            ) from exc
        except WorkqError:
            raise
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self.settings.redacted_url()} ({exc!r}); "
                "it reconnects on the next call"
            ) from exc

    def _run(self) -> None:
        try:
            while self._serve_once():
                pass
        finally:
            self._close_conn()

    def _serve_once(self) -> bool:
        """Run what is queued, then pump events; False once closed and drained.

        Nothing may end this thread but ``close()``: an unexpected error fails the
        commands it was running with that error, drops the connection, and the next
        command reconnects.
        """
        with self._cond:
            while not self._cmds and self.conn is None and not self._closed:
                self._cond.wait()
            if self._closed and not self._cmds:
                return False
            batch = list(self._cmds)
            self._cmds.clear()
            self._woken = False
        idle: tuple[Any, float] | None = None
        settled: list[Batch] = []
        with self._lock:
            try:
                if batch and self.conn is None:
                    try:
                        self._connect()
                    except Exception as exc:
                        # Commands queued while this connect was tried waited for it: they
                        # get its error too, and the next command tries again.
                        with self._cond:
                            batch += self._cmds
                            self._cmds.clear()
                        error = exc if isinstance(exc, BrokerUnavailable) else self._failed(exc)
                        for _, fut in batch:
                            if fut is not _POSTED and fut.set_running_or_notify_cancel():
                                fut.set_exception(error)
                        return True
                for fn, fut in batch:
                    self._execute(fn, fut)
                if self.conn is not None:
                    idle = self._pump(settled)
            except Exception as exc:
                log.exception("rabbitmq I/O thread: unexpected error; reconnecting on next use")
                error = self._failed(exc)
                for _, fut in batch:
                    if fut is not _POSTED and not fut.done():
                        with contextlib.suppress(Exception):
                            fut.set_exception(error)
                self._lost(exc)
        # Their publishers, woken now, find the GIL and the connection free.
        for finished in settled:
            finished.done.set()
        if settled and self._leader:
            self.wake_leader()  # a publisher leading (``confirmed``) sees it at once
        if idle is not None and not (self._leader and self._park(idle[1])):
            # Without the lock: a publisher may write meanwhile (``publish_here``).
            wait_events(*idle)
        return True

    def _pump(self, settled: list[Batch]) -> tuple[Any, float] | None:
        """Handle what has arrived (the batches it settles are added to ``settled``, for
        the caller to set); then the connection and how long to wait for events without
        holding it, or None to look again at once."""
        conn = self.conn
        # A wake-up may have been consumed by a pump inside a command: never sleep on
        # work already queued.
        with self._cond:
            busy = bool(self._cmds)
        budget = None if busy else idle_budget(conn, IDLE_WAIT)
        inside = not busy and budget is None
        # Deferred only for a pump that does not wait (a confirm is not held back).
        self.confirms.defer(None if inside else settled)
        try:
            # Not epoll (no waiting outside pika): wait inside it, holding the lock.
            conn.process_data_events(time_limit=IDLE_WAIT if inside else 0)
        except CONNECTION_ERRORS as exc:
            self._lost(exc)
            return None
        except pika.exceptions.AMQPError as exc:
            log.warning("rabbitmq I/O: %r", exc)
            return None
        finally:
            self.confirms.defer(None)
        if budget is None or self.conn is not conn or not conn.is_open:
            return None
        with self._cond:
            if self._cmds or self._closed:
                return None
        # What the pump's callbacks scheduled shortens the wait (budget taken after it).
        return conn, idle_budget(conn, IDLE_WAIT) or 0.0

    def _execute(self, fn: Callable[[], Any], fut: Future[Any]) -> None:
        """Run one command; the watchdog cuts the connection if it hangs."""
        self._busy = True
        try:
            if fut is _POSTED:
                try:
                    fn()
                except Exception as exc:
                    log.warning("rabbitmq I/O: %r", exc)
                    if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, WorkqError):
                        self._lost(exc)
                return
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
                if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, WorkqError):
                    self._lost(exc)
        finally:
            self._busy = False

    def _failed(self, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"the connection to RabbitMQ at {self.settings.redacted_url()} failed ({exc!r}); "
            "it reconnects on the next call"
        )

    def _watch(self) -> None:
        """Cut the connection under a command that hears nothing from the broker for
        ``stuck_after`` (a silent network: a long command that gets answers is left
        alone), or under a close that gets no goodbye within ``CLOSE_TIMEOUT``."""
        heard, quiet_since = -1, time.monotonic()
        while not self._watch_stop.wait(WATCH_EVERY):
            conn, now = self.conn, time.monotonic()
            close_by = self._close_by
            if conn is None or (not self._busy and close_by is None):
                heard = -1
                continue
            if close_by is not None:
                silent = now > close_by
            else:
                n = received_bytes(conn)
                if n != heard:
                    heard, quiet_since = n, now
                silent = now - quiet_since > self.stuck_after
            if silent:
                log.warning(
                    "RabbitMQ at %s went silent; dropping the connection",
                    self.settings.redacted_url(),
                )
                heard, self._close_by = -1, None
                with contextlib.suppress(Exception):
                    abort(conn)

    def _connect(self) -> None:
        """Connect within ``connect_timeout`` in all, retries over the host list included."""
        s = self.settings
        deadline = Deadline(s.connect_timeout)
        tries = 0
        last: Exception | None = None
        try:
            for attempt in CONNECT.retrying(
                Exception, attempts=s.reconnect_attempts, deadline=deadline
            ):
                with attempt:
                    tries += 1
                    if deadline.passed() and last is not None:
                        raise last  # out of time: the error that used it up
                    try:
                        conn = pika.BlockingConnection(connection_parameters(s, deadline.left()))
                    except Exception as exc:
                        last = exc
                        raise
        except Exception as exc:
            raise connect_failed(s, tries, exc) from exc
        self.conn = conn
        self.generation += 1
        self._admin = self._pub = None

    def _lost(self, exc: BaseException) -> None:
        log.warning("lost the RabbitMQ connection (%r); reconnecting on next use", exc)
        conn, self.conn = self.conn, None
        self.generation += 1
        self._admin = self._pub = None
        if conn is not None:
            # Not a polite close: on a black-holed network it would wait for an answer.
            with contextlib.suppress(Exception):
                abort(conn)
            with contextlib.suppress(Exception):
                conn.close()
        self.confirms.fail(f"connection lost: {exc!r}")
        self.declared = Declared()
        for cb in list(self.on_lost):
            with contextlib.suppress(Exception):
                cb()

    def drop(self, reason: str) -> None:
        """Give up on the connection (I/O thread): the next command reconnects.

        For a connection that looks open but no longer answers: a black-holed network
        only shows itself by silence, and the heartbeat takes minutes to notice.
        """
        if self.conn is not None:
            self._lost(TimeoutError(reason))

    def close(self) -> None:
        """Close the connection; returns within a few seconds even on a dead network."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            conn = self.conn
            self._cond.notify()
        with contextlib.suppress(OSError):
            os.write(self._lead_w, b"x")
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.add_callback_threadsafe(_noop)
        if threading.current_thread() is not self._thread:
            # A command still running has until the watchdog cuts it; the close itself
            # gets CLOSE_TIMEOUT. The thread is a daemon: never wait longer than that.
            self._thread.join(timeout=CLOSE_TIMEOUT * 2)
        self._watch_stop.set()
        with self._cond:
            led = self._leader is not None  # none can start now that it is closed
        if not led and not self._thread.is_alive():
            for fd in (self._lead_r, self._lead_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _close_conn(self) -> None:
        with self._lock:
            self.confirms.fail("the driver was closed")
            conn, self.conn = self.conn, None
            if conn is not None:
                self._close_by = time.monotonic() + CLOSE_TIMEOUT
                with contextlib.suppress(Exception):
                    conn.close()
                self._close_by = None
        self._watch_stop.set()

    # -- channels (I/O thread only) ----------------------------------------------------

    def connection(self) -> Any:
        if self.conn is None or not self.conn.is_open:
            self.conn = None
            self._connect()
        return self.conn

    def channel(self) -> Any:
        return self.connection().channel()

    def admin(self) -> Any:
        if self._admin is None or not self._admin.is_open:
            self._admin = self.channel()
        return self._admin

    def pub(self) -> Any:
        if self._pub is None or not self._pub.is_open:
            ch = self.channel()
            self.confirms.restart("publish channel closed")
            enable_confirms(
                ch, self.confirms.on_return, self._on_pub_close, self.confirms.on_confirm
            )
            self._pub = ch
        return self._pub

    def reset_pub(self) -> None:
        """Close the confirm channel; the next publish opens a new one."""
        ch, self._pub = self._pub, None
        self.confirms.fail("publish channel reset")
        if ch is not None and ch.is_open:
            with contextlib.suppress(Exception):
                ch.close()

    def _on_pub_close(self, _channel: Any, reason: Exception) -> None:
        self._pub = None
        self.confirms.fail(f"publish channel closed: {reason!r}")

    def pump(self) -> None:
        """Send what is buffered and handle what has arrived, without waiting."""
        self.connection().process_data_events(time_limit=0)

    def publish_here(
        self, ready: Callable[[], bool], entries: Callable[[], Sequence[Envelope]]
    ) -> Batch | None:
        """Send on the caller's thread if nothing waits for the connection, it is free
        and open, its confirm channel is open and ``ready()`` (checked holding it: no
        declaration is due); None if not, and nothing was sent: use the I/O thread.

        Only non-blocking work happens here (encoding, a socket write that takes what
        fits): a declaration or a new channel waits for answers, which is the I/O
        thread's, under the watchdog. The confirm arrives through the I/O thread.
        """
        # A short wait: the I/O thread holds the connection only briefly between its
        # waits, unless it runs a command (then this publish queues behind it).
        if self._cmds or not self._lock.acquire(timeout=HERE_WAIT):
            return None
        try:
            conn, ch = self.conn, self._pub
            if self._closed or conn is None or ch is None or not conn.is_open:
                return None
            if not ch.is_open or not ready():
                return None
            if self._wire is None or self._wire_of is not ch:
                self._wire, self._wire_of = Wire(ch, direct=True), ch
            wire = self._wire
            try:
                batch = self.confirms.send(wire, entries())
            except BaseException:
                # As ``publish``: a fresh channel, failing what is pending. Closing the
                # old one waits for the broker: the I/O thread's.
                self._pub = self._wire = None
                self.confirms.fail("publish channel reset")
                self.post(functools.partial(_close_quietly, ch))
                raise
        finally:
            self._lock.release()
        if self._parked:
            # Its confirm must be read even if the caller leading now stops first.
            with self._cond:
                self._cond.notify_all()
        return batch

    def here(self, fn: Callable[[], bool], wait: bool = True) -> bool:
        """Run ``fn`` on the caller's thread, holding the connection, if nothing waits
        for the I/O thread and the connection is free (within ``HERE_WAIT``, or at once
        if not ``wait``) and open; returns what ``fn`` returned, or False if it did not
        run.

        As in ``publish_here``, ``fn`` does only non-blocking work (a socket write
        that takes what fits, the rest left to the I/O loop): waiting for an answer
        is the I/O thread's, under the watchdog.
        """
        if self._cmds:
            return False
        if not (self._lock.acquire(timeout=HERE_WAIT) if wait else self._lock.acquire(False)):
            return False
        try:
            conn = self.conn
            if self._closed or conn is None or not conn.is_open:
                return False
            return fn()
        finally:
            self._lock.release()

    def lead(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` until ``done()``, reading the connection on this
        thread; False if it cannot lead now (another thread leads, the I/O thread has
        work or no connection): then wait as usual, inside ``waiting()``.

        A consumer waiting for its next delivery would otherwise be woken by the I/O
        thread after that thread was woken by the socket: two hand-offs per message,
        which at prefetch 1 cost as much as the broker's round trip. While a caller
        leads, the I/O thread waits for commands only (``_park``), so the socket wakes
        the leader alone; what the leader reads for others (their deliveries, confirms)
        it dispatches to them as the I/O thread would. Only non-blocking work is done
        holding the connection, as in ``publish_here``.
        """
        if threading.current_thread() is self._thread:
            return False
        with self._cond:
            if self._leader or self._cmds or self._closed or self.conn is None:
                return False
            self._leader = threading.current_thread()
        try:
            deadline = time.monotonic() + timeout
            woken = False
            while True:
                if not self._lock.acquire(timeout=HERE_WAIT):
                    return False  # a command runs: the I/O thread dispatches meanwhile
                try:
                    conn = self.conn
                    if self._closed or conn is None or not conn.is_open:
                        return False
                    if not self._read(conn, woken):
                        return False
                    if done():
                        return True
                    if self._cmds:
                        # Its wake-up may have been read here: the I/O thread's turn.
                        self._poke(conn)
                        return False
                    left = deadline - time.monotonic()
                    budget = idle_budget(conn, left) if left > 0 else None
                    if budget is None:
                        return left <= 0
                finally:
                    self._lock.release()
                wait_led(conn, self._lead_r, budget)
                woken = True
        finally:
            with self._cond:
                self._leader = None

    def confirmed(self, batch: Batch, timeout: float) -> bool:
        """Wait up to ``timeout`` until every confirm of ``batch`` is in (True), reading
        the connection on this thread when it can (``lead``).

        Else the I/O thread is woken by the socket and then wakes this thread: at one
        publish at a time, two hand-offs a message on top of the broker's round trip.
        """
        done = batch.done
        if done.is_set():
            return True
        deadline = time.monotonic() + timeout
        if self.lead(done.is_set, timeout):  # done, or out of time
            return done.is_set()
        with self.waiting():
            return done.wait(max(deadline - time.monotonic(), 0.0))

    def _read(self, conn: Any, woken: bool) -> bool:
        """Handle what has arrived, without waiting, on a leading caller's thread
        (connection held; ``woken``: after a wait); False if the connection failed (it
        is dropped, as the I/O thread would)."""
        try:
            read = read_now(conn)
            if read is None or (not read and woken):
                # Woken with nothing to read: what woke the wait (pika's own wake-up
                # pipe, say) is handled by the full pass, else the wait would end at
                # once again.
                conn.process_data_events(time_limit=0)
        except CONNECTION_ERRORS as exc:
            self._lost(exc)
            return False
        except pika.exceptions.AMQPError as exc:
            log.warning("rabbitmq I/O: %r", exc)
            return False
        except Exception as exc:
            log.exception("rabbitmq I/O (caller's thread): unexpected error; reconnecting")
            self._lost(exc)
            return False
        return True

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a wait for what only a read of the connection brings, on a thread
        that does not lead: the I/O thread does not leave the reading to a leader
        meanwhile (the leader may stop before it comes)."""
        with self._cond:
            self._waiting += 1
            if self._parked:
                self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1

    def wake_leader(self) -> None:
        """Make a leading caller look again (see ``lead``), unless it is this thread:
        something it waits for happened on another thread."""
        leader = self._leader
        if leader is not None and leader is not threading.current_thread():
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                os.write(self._lead_w, b"x")

    def _poke(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.add_callback_threadsafe(_noop)

    def _park(self, budget: float) -> bool:
        """While a caller leads (see ``lead``), wait for commands instead of events, at
        most ``PARK`` at a time: nobody else waits on what the connection brings (a
        publisher waiting for confirms leads, or waits inside ``waiting``). False if
        it could not park at all: then the I/O thread waits for events as usual (it
        looped without waiting, on a busy connection, while two callers waited)."""
        parked = False
        with self._cond:
            while (
                self._leader
                and not self._cmds
                and not self._closed
                and not self._waiting
                and budget > 0
            ):
                parked = self._parked = True
                self._cond.wait(min(budget, PARK))
                self._parked = False
                budget -= PARK
        return parked

    def publish(self, entries: Sequence[Envelope]) -> Batch:
        """Send entries on the confirm channel; the returned batch settles on confirms."""
        wire = Wire(self.pub())
        try:
            return self.confirms.send(wire, entries)
        except BaseException:
            # Delivery tags and what was written no longer agree: start a fresh channel
            # (this fails what is pending, so it is retried or raised, never lost).
            self.reset_pub()
            raise
