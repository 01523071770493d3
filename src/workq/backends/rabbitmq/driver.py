"""``amqp://`` / ``amqps://``: the sync RabbitMQ driver on pika.

pika is not thread-safe, so one I/O thread per driver owns the connection and every
channel; other threads hand it work and wait on a future. Publishes are pipelined:
the I/O thread sends a whole batch, and publisher confirms settle it as they arrive.
See ``topology.py`` for how queues, lanes, delays and dead letters map onto RabbitMQ.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.data
import pika.exceptions
import pika.frame
import pika.spec
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ...driver import Capabilities, DeadLetter, Driver, LaneStats, QueueStats, Receiver
from ...errors import BrokerUnavailable, ConfigurationError, PublishError, WorkqError
from ...lanes import Lane
from ...messages import Outgoing, Received
from ...spec import QueueSpec
from .settings import RabbitMQSettings
from .topology import (
    ATTEMPT,
    DELAY_REDECLARE,
    REASON,
    Declared,
    Registry,
    Topology,
    check_declared,
    config_error,
    copy_of,
    delay_ms,
    delay_record,
    lane_record,
    meta_queue,
    outgoing_headers,
    queue_type,
    reason_of,
    received,
    spec_record,
)

__all__ = ["RabbitMQDriver", "create_async_driver", "create_driver"]

log = logging.getLogger("workq.rabbitmq")
T = TypeVar("T")

CAPABILITIES = Capabilities(
    backend="rabbitmq",
    lease_model="connection",
    max_body_size=128 * 1024 * 1024,
    lane_refresh=1.0,
    receive_batch=100,
)

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
#: Messages per pipelined part of one publish (see ``RabbitMQDriver.publish_to``).
PUBLISH_PART = 50
#: How long to wait for the confirm of a registry record.
SYNC_TIMEOUT = 15.0


def create_driver(settings: RabbitMQSettings) -> RabbitMQDriver:
    """The sync driver; connects at once, raising ``BrokerUnavailable`` if it cannot."""
    return RabbitMQDriver(settings)


async def create_async_driver(settings: RabbitMQSettings) -> Any:
    """The native aio-pika driver."""
    from .aio import AsyncRabbitMQDriver

    return await AsyncRabbitMQDriver.connect(settings)


def connection_parameters(settings: RabbitMQSettings) -> list[pika.ConnectionParameters]:
    """One parameter set per host, in failover order."""
    out = []
    credentials = pika.PlainCredentials(settings.username, settings.password.get_secret_value())
    for item in settings.hosts:
        host, _, port = item.rpartition(":")
        ssl_options = None
        if settings.tls:
            ssl_options = pika.SSLOptions(tls_context(settings), server_hostname=host)
        out.append(
            pika.ConnectionParameters(
                host=host,
                port=int(port),
                virtual_host=settings.vhost,
                credentials=credentials,
                heartbeat=settings.heartbeat,
                blocked_connection_timeout=settings.publish_timeout,
                connection_attempts=1,
                socket_timeout=settings.connect_timeout,
                stack_timeout=settings.connect_timeout,
                ssl_options=ssl_options,
            )
        )
    return out


def tls_context(settings: RabbitMQSettings) -> ssl.SSLContext:
    """The TLS context the settings describe (CA file, client certificate, verification)."""
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"TLS files for {settings.redacted_url()} cannot be loaded ({exc}); check "
            "tls_ca_file, tls_cert_file and tls_key_file"
        ) from exc
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _received(
    topo: Topology, props: Any, body: bytes, redelivered: bool = False, token: Any = None
) -> Received:
    """A :class:`Received` from a pika delivery's properties."""
    return received(
        topo,
        body=body,
        headers=props.headers,
        message_id=props.message_id,
        priority=props.priority,
        redelivered=redelivered,
        timestamp=props.timestamp,
        token=token,
    )


@dataclass(slots=True)
class _Entry:
    """One persistent message to publish, with the few properties workq sets."""

    exchange: str
    routing_key: str
    body: bytes
    mandatory: bool = False
    headers: dict[str, Any] | None = None
    message_id: str | None = None
    timestamp: int | None = None
    priority: int | None = None


_P = pika.spec.BasicProperties
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PROPS_HEAD = struct.Struct(">HxxQH")  # class id, weight, body size, property flags


def _table(headers: dict[str, Any]) -> bytes:
    """An AMQP field table, byte for byte as pika encodes it (str values as long strings)."""
    parts: list[bytes] = []
    for key, value in headers.items():
        k = key.encode()
        if not isinstance(value, str) or len(k) > 255:
            encoded: list[bytes] = []
            pika.data.encode_table(encoded, headers)  # other types, and pika's errors
            return b"".join(encoded)
        v = value.encode()
        parts += (_U8.pack(len(k)), k, b"S", _U32.pack(len(v)), v)
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def _header_payload(e: _Entry) -> bytes:
    """The content header frame's payload for ``e``, as ``pika.frame.Header`` marshals it."""
    flags = _P.FLAG_DELIVERY_MODE
    parts = []
    if e.headers is not None:
        flags |= _P.FLAG_HEADERS
        parts.append(_table(e.headers))
    parts.append(b"\x02")  # delivery_mode: persistent
    if e.priority is not None:
        flags |= _P.FLAG_PRIORITY
        parts.append(_U8.pack(e.priority))
    if e.message_id is not None:
        flags |= _P.FLAG_MESSAGE_ID
        mid = e.message_id.encode()
        parts.append(_U8.pack(len(mid)) + mid)
    if e.timestamp is not None:
        flags |= _P.FLAG_TIMESTAMP
        parts.append(_U64.pack(e.timestamp))
    return _PROPS_HEAD.pack(_P.INDEX, len(e.body), flags) + b"".join(parts)


class _Batch:
    """Confirms of one pipelined publish; ``done`` is set once every entry is settled."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.errors: dict[int, str] = {}
        self.done = threading.Event()
        if size == 0:
            self.done.set()

    def settle(self, index: int, error: str | None) -> None:
        if error is not None:
            self.errors.setdefault(index, error)
        self.left -= 1
        if self.left <= 0:
            self.done.set()


class _Retry(Exception):
    """A publish attempt left some messages unconfirmed; try those again."""


#: Write frames to pika's transport once this many bytes are gathered.
WRITE_CHUNK = 256 * 1024
_FRAME_END = bytes([pika.spec.FRAME_END])
_FRAME_HEAD = struct.Struct(">BHI")
_ACK_FRAME = struct.Struct(">BHIIQBB")


def _ack_frame(channel_number: int, tag: int) -> bytes:
    """A whole ``basic.ack`` frame for exactly one delivery tag (multiple=False)."""
    return _ACK_FRAME.pack(
        pika.spec.FRAME_METHOD, channel_number, 13, pika.spec.Basic.Ack.INDEX, tag, 0, 0xCE
    )


class _Wire:
    """Frames for one channel, marshalled as pika would and written in few large chunks.

    pika writes every frame with its own ``send()`` call, three per published message
    and one per ack; gathering them is most of the cost of a pipelined publish.
    The channel must be open (checked once, on the I/O thread).
    """

    def __init__(self, channel: Any) -> None:
        impl = channel._impl
        impl._raise_if_not_open()
        self._conn = impl.connection
        self._num: int = impl.channel_number
        self._max_body: int = self._conn._body_max_length
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._parts: list[bytes] = []
        self._size = 0

    def publish(self, e: _Entry) -> None:
        key = (e.exchange, e.routing_key, e.mandatory)
        method = self._methods.get(key)
        if method is None:
            method = self._methods[key] = pika.frame.Method(
                self._num,
                pika.spec.Basic.Publish(
                    exchange=e.exchange, routing_key=e.routing_key, mandatory=e.mandatory
                ),
            ).marshal()
        header = _header_payload(e)
        body = e.body
        parts = self._parts
        parts += (
            method,
            _FRAME_HEAD.pack(pika.spec.FRAME_HEADER, self._num, len(header)),
            header,
            _FRAME_END,
        )
        step = self._max_body
        for start in range(0, len(body), step):
            chunk = body[start : start + step]
            parts.append(_FRAME_HEAD.pack(pika.spec.FRAME_BODY, self._num, len(chunk)))
            parts.append(chunk)
            parts.append(_FRAME_END)
        self._size += len(body) + 256
        if self._size >= WRITE_CHUNK:
            self.flush()

    def ack(self, tag: int) -> None:
        self._parts.append(_ack_frame(self._num, tag))
        self._size += 21
        if self._size >= WRITE_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._conn._output_marshaled_frames([data])


def _noop() -> None:
    pass


#: Marks a command nobody waits for (see ``_IO.post``).
_POSTED: Future[Any] = Future()


class _IO:
    """The one thread that touches pika: a command queue served between event pumps."""

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.conn: Any = None
        self.generation = 0
        self._cmds: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._woken = False
        self._closed = False
        self._admin: Any = None
        self._pub: Any = None
        self._meta_ch: Any = None
        self._tag = 0
        self._pending: dict[int, tuple[_Batch, int]] = {}
        self._by_mid: dict[str, int] = {}
        self._returned: set[int] = set()
        self.declared = Declared()
        self.regs: dict[str, Registry] = {}
        self.on_lost: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="workq-rabbitmq-io", daemon=True)
        self._thread.start()

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
        while True:
            with self._cond:
                while not self._cmds and self.conn is None and not self._closed:
                    self._cond.wait()
                if self._closed and not self._cmds:
                    break
                batch = list(self._cmds)
                self._cmds.clear()
                self._woken = False
            if batch and self.conn is None:
                try:
                    self._connect()
                except BrokerUnavailable as exc:
                    for _, fut in batch:
                        if fut is not _POSTED and fut.set_running_or_notify_cancel():
                            fut.set_exception(exc)
                    continue
            for fn, fut in batch:
                if fut is _POSTED:
                    try:
                        fn()
                    except BaseException as exc:
                        log.warning("rabbitmq I/O: %r", exc)
                        if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, WorkqError):
                            self._lost(exc)
                    continue
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)
                    if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, WorkqError):
                        self._lost(exc)
            if self.conn is not None:
                # A wake-up may have been consumed by a pump inside a command: never sleep
                # on work already queued.
                with self._cond:
                    busy = bool(self._cmds)
                try:
                    self.conn.process_data_events(time_limit=0 if busy else 1.0)
                except CONNECTION_ERRORS as exc:
                    self._lost(exc)
                except pika.exceptions.AMQPError as exc:
                    log.warning("rabbitmq I/O: %r", exc)
        self._close_conn()

    def _connect(self) -> None:
        attempts = max(self.settings.reconnect_attempts, 1)
        params = connection_parameters(self.settings)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=0.2, max=5),
                retry=retry_if_exception_type(CONNECTION_ERRORS),
                reraise=True,
            ):
                with attempt:
                    conn = pika.BlockingConnection(params)
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot connect to RabbitMQ at {self.settings.redacted_url()} after "
                f"{attempts} attempts over {len(params)} host(s): {exc!r}. Check the broker "
                "is running and the URL (hosts, credentials, vhost) is right"
            ) from exc
        self.conn = conn
        self.generation += 1
        self._admin = self._pub = self._meta_ch = None

    def _lost(self, exc: BaseException) -> None:
        log.warning("lost the RabbitMQ connection (%r); reconnecting on next use", exc)
        conn, self.conn = self.conn, None
        self.generation += 1
        self._admin = self._pub = self._meta_ch = None
        with contextlib.suppress(Exception):
            if conn is not None and conn.is_open:
                conn.close()
        self._fail_pending(f"connection lost: {exc!r}")
        self.declared = Declared()
        for cb in list(self.on_lost):
            with contextlib.suppress(Exception):
                cb()

    def _fail_pending(self, error: str) -> None:
        pending, self._pending = self._pending, {}
        self._by_mid.clear()
        self._returned.clear()
        for batch, index in pending.values():
            batch.settle(index, error)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            conn = self.conn
            self._cond.notify()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.add_callback_threadsafe(_noop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _close_conn(self) -> None:
        self._fail_pending("the driver was closed")
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

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
            self._fail_pending("publish channel closed")
            self._tag = 0
            ch._impl.add_on_return_callback(self._on_return)
            ch._impl.add_on_close_callback(self._on_pub_close)
            ch._impl.confirm_delivery(ack_nack_callback=self._on_confirm)
            self._pub = ch
        return self._pub

    def reset_pub(self) -> None:
        """Close the confirm channel; the next publish opens a new one."""
        ch, self._pub = self._pub, None
        self._fail_pending("publish channel reset")
        if ch is not None and ch.is_open:
            with contextlib.suppress(Exception):
                ch.close()

    def _on_pub_close(self, _channel: Any, reason: Exception) -> None:
        self._pub = None
        self._fail_pending(f"publish channel closed: {reason!r}")

    def _on_return(self, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        tag = self._by_mid.get(props.message_id or "")
        if tag is not None:
            self._returned.add(tag)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        last = method.delivery_tag
        if method.multiple:
            # Tags are pending in increasing order: stop at the first one not covered.
            tags = []
            for t in self._pending:
                if t > last:
                    break
                tags.append(t)
        else:
            tags = [last]
        for tag in tags:
            entry = self._pending.pop(tag, None)
            if entry is None:
                continue
            batch, index = entry
            if not ok:
                batch.settle(index, "nacked by the broker (queue full or internal error)")
            elif tag in self._returned:
                self._returned.discard(tag)
                batch.settle(index, "unroutable: the lane queue is missing")
            else:
                batch.settle(index, None)

    def pump(self) -> None:
        """Send what is buffered and handle what has arrived, without waiting."""
        self.connection().process_data_events(time_limit=0)

    def publish(self, entries: Sequence[_Entry]) -> _Batch:
        """Send entries on the confirm channel; the returned batch settles on confirms."""
        wire = _Wire(self.pub())
        batch = _Batch(len(entries))
        pending, by_mid = self._pending, self._by_mid
        try:
            for index, e in enumerate(entries):
                self._tag += 1
                pending[self._tag] = (batch, index)
                if e.mandatory and e.message_id:
                    by_mid[e.message_id] = self._tag
                wire.publish(e)
            wire.flush()
        except BaseException:
            # Delivery tags and what was written no longer agree: start a fresh channel
            # (this fails what is pending, so it is retried or raised, never lost).
            self.reset_pub()
            raise
        if len(self._by_mid) > 100_000:
            self._by_mid.clear()
        return batch


def _declare(ch_fn: Callable[[], Any], topo_name: str, fn: Callable[[Any], Any]) -> Any:
    try:
        return fn(ch_fn())
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406:
            raise config_error(topo_name, exc.reply_text) from None
        if exc.reply_code == 404:
            # A replicated queue whose node is down or still recovering: transient.
            raise BrokerUnavailable(
                f"queue {topo_name!r} is not available right now ({exc.reply_text}); "
                "retry once the node or its replicas are back"
            ) from exc
        raise


class RabbitMQDriver(Driver):
    """The sync RabbitMQ driver (pika, one I/O thread per driver)."""

    capabilities = CAPABILITIES

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.io = _IO(settings)
        self._topos: dict[str, Topology] = {}
        try:
            self.io.call(self.io.connection, timeout=settings.connect_timeout * 10)
        except BaseException:
            self.io.close()
            raise

    # -- topology (I/O thread) -----------------------------------------------------------

    def topology(self, spec: QueueSpec) -> Topology:
        topo = self._topos.get(spec.name)
        if topo is None or topo.max_priority != spec.max_priority:
            topo = Topology.of(spec, self.settings.queue_type)
            self._topos[spec.name] = topo
        return topo

    def _ensure_base(self, topo: Topology) -> None:
        io = self.io
        if io.declared.fresh(topo.exchange):
            return

        def run(ch: Any) -> None:
            ch.exchange_declare(topo.exchange, "direct", durable=True)
            ch.exchange_declare(topo.dlx, "fanout", durable=True)
            ch.exchange_declare(topo.delay_exchange, "headers", durable=True)
            ch.queue_declare(topo.dlq, durable=True, arguments=topo.queue_args())
            ch.queue_bind(topo.dlq, topo.dlx)
            default = Lane(topo.name)
            ch.queue_declare(topo.lane_queue(default), durable=True, arguments=topo.lane_args())
            ch.queue_bind(topo.lane_queue(default), topo.exchange, topo.routing_key(default))

        _declare(io.admin, topo.name, run)
        _declare(
            io.admin,
            topo.name,
            lambda ch: ch.queue_declare(topo.meta, durable=True, arguments=topo.queue_args()),
        )
        io.declared.mark(topo.exchange)
        io.declared.mark(topo.lane_queue(Lane(topo.name)))

    def _ensure_lanes(self, topo: Topology, lanes: set[Lane], delays: set[int]) -> None:
        """Declare missing lane and delay queues, and record them in the registry."""
        io = self.io
        out: list[bytes] = []
        for lane in sorted(lanes, key=lambda ln: (ln.tenant or "", ln.priority)):
            qname = topo.lane_queue(lane)
            if io.declared.fresh(qname):
                continue
            phys = topo.physical(lane)

            def run(ch: Any, qname: str = qname, phys: Lane = phys) -> None:
                ch.queue_declare(qname, durable=True, arguments=topo.lane_args())
                ch.queue_bind(qname, topo.exchange, topo.routing_key(phys))

            _declare(io.admin, topo.name, run)
            io.declared.mark(qname)
            out.append(lane_record(phys))
        for ms in sorted(delays):
            qname = topo.delay_queue(ms)
            if io.declared.fresh(qname, DELAY_REDECLARE):
                continue

            def run_delay(ch: Any, qname: str = qname, ms: int = ms) -> None:
                ch.queue_declare(qname, durable=True, arguments=topo.delay_args(ms))
                ch.queue_bind(qname, topo.delay_exchange, "", arguments=topo.delay_binding(ms))

            _declare(io.admin, topo.name, run_delay)
            fresh = qname not in io.declared.names
            io.declared.mark(qname)
            if fresh:
                out.append(delay_record(ms))
        if out:
            try:
                self._registry(topo, write=out)
            except BrokerUnavailable as exc:
                # Messages still flow to the lane; record it again on the next publish.
                log.warning("queue %r: recording new lanes failed: %s", topo.name, exc)
                io.declared = Declared()

    def _stored_spec(self, name: str) -> QueueSpec | None:
        """The spec in an existing registry of ``name``, read without declaring anything
        (declaring with defaults would clash with a queue declared differently)."""
        io = self.io
        ch = io.channel()
        try:
            try:
                ch.queue_declare(meta_queue(name), passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None  # never declared: the defaults apply
                raise
            reg = Registry(name)
            while True:
                method, _props, body = ch.basic_get(meta_queue(name), auto_ack=False)
                if method is None:
                    return reg.spec
                reg.add(body)
        finally:
            with contextlib.suppress(Exception):
                if ch.is_open:
                    ch.close()  # what was read goes back

    def _registry(self, topo: Topology, write: Sequence[bytes] = ()) -> Registry:
        """Read the queue's registry (and add ``write`` to it); I/O thread only.

        The registry is a small queue of records, each a set of facts; the union of all
        of them is the registry. Reading gets every record and puts it back; writing
        publishes one merged record (confirmed) and only then acks the ones it replaces.
        A record held by a concurrent reader is missed this time and seen the next.
        """
        io = self.io
        reg = io.regs.get(topo.name)
        if reg is None:
            reg = io.regs[topo.name] = Registry(topo.name)
        self._ensure_base(topo)
        ch = io.channel()
        try:
            last = None
            while True:
                method, _props, body = _declare(
                    lambda: ch, topo.name, lambda c: c.basic_get(topo.meta, auto_ack=False)
                )
                if method is None:
                    break
                last = method.delivery_tag
                reg.add(body)
            if write:
                for body in write:
                    reg.add(body)
                batch = io.publish([_Entry("", topo.meta, reg.dump())])
                deadline = time.monotonic() + SYNC_TIMEOUT
                while not batch.done.is_set():
                    if time.monotonic() > deadline:
                        raise BrokerUnavailable(
                            f"queue {topo.name!r}: no confirm for its registry record "
                            f"within {SYNC_TIMEOUT}s"
                        )
                    io.connection().process_data_events(time_limit=0.02)
                if batch.errors:
                    raise BrokerUnavailable(
                        f"queue {topo.name!r}: writing its registry record failed "
                        f"({next(iter(batch.errors.values()))})"
                    )
                if last is not None:
                    ch.basic_ack(last, multiple=True)
        finally:
            with contextlib.suppress(Exception):
                if ch.is_open:
                    ch.close()  # what was read and not replaced goes back
        return reg

    # -- Driver API ----------------------------------------------------------------------

    def declare(self, spec: QueueSpec, *, implicit: bool = False) -> QueueSpec:
        def op() -> QueueSpec:
            if implicit and (stored := self._stored_spec(spec.name)) is not None:
                # Adopt what was declared elsewhere, declaring it the same way.
                self._ensure_base(Topology.of(stored, self.settings.queue_type))
                return stored
            kind = queue_type(spec, self.settings.queue_type)
            topo = Topology.of(spec, self.settings.queue_type)
            reg = self._registry(topo)
            if reg.spec is None or (not implicit and reg.explicit is None):
                reg = self._registry(topo, write=[spec_record(spec, kind, implicit)])
            if implicit:
                return reg.spec or spec
            if reg.explicit is not None:  # None only while the registry is unavailable
                check_declared(reg.explicit, spec, kind)
            return spec

        effective: QueueSpec = self.io.call(op, timeout=SYNC_TIMEOUT * 3)
        self._topos[spec.name] = Topology.of(effective, self.settings.queue_type)
        return effective

    def _entries(
        self, topo: Topology, messages: Sequence[Outgoing], dead: str | None = None
    ) -> list[_Entry]:
        out = []
        native = topo.native_priority
        for msg in messages:
            lane = msg.lane
            if dead is not None:
                headers = outgoing_headers(msg)
                headers[REASON] = dead
                exchange, key, mandatory = topo.dlx, topo.routing_key(lane), False
            elif msg.delay:
                headers = outgoing_headers(msg, delay_ms(msg.delay))
                exchange, key, mandatory = topo.delay_exchange, topo.routing_key(lane), True
            else:
                headers = outgoing_headers(msg)
                exchange, key, mandatory = topo.exchange, topo.routing_key(lane), True
            out.append(
                _Entry(
                    exchange,
                    key,
                    msg.body,
                    mandatory,
                    headers,
                    msg.id,
                    int(msg.enqueued_at),
                    lane.priority if native else None,
                )
            )
        return out

    def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        self.publish_to(self.topology(spec), messages)

    def publish_to(
        self, topo: Topology, messages: Sequence[Outgoing], dead: str | None = None
    ) -> None:
        """Publish and wait for every confirm, retrying what is not confirmed (bounded)."""
        if not messages:
            return
        lanes = {m.lane for m in messages}
        delays = {delay_ms(m.delay) for m in messages if m.delay and dead is None}
        left = list(range(len(messages)))
        errors: dict[int, str] = {}
        io = self.io

        def attempt() -> None:
            nonlocal left, errors

            def op(part: list[int]) -> _Batch:
                self._ensure_base(topo)
                self._ensure_lanes(topo, lanes, delays)
                batch = io.publish(self._entries(topo, [messages[i] for i in part], dead))
                io.pump()  # on the wire now, not after every queued part is encoded
                return batch

            # Handed to the I/O thread in parts without waiting, so the broker works on
            # the first part while later ones are still being encoded; then every
            # confirm is awaited. (Encoding on the I/O thread: this thread would hold the
            # GIL while building every part before the first one could be sent.)
            parts = [left[i : i + PUBLISH_PART] for i in range(0, len(left), PUBLISH_PART)]
            sent: list[tuple[list[int], Future[_Batch]]] = []
            failed: list[tuple[int, str]] = []
            cause: BaseException | None = None
            for part in parts:
                try:
                    sent.append((part, io.submit(functools.partial(op, part))))
                except Exception as exc:
                    failed += [(i, repr(exc)) for i in part]
                    cause = exc
            deadline = time.monotonic() + self.settings.publish_timeout
            for part, fut in sent:
                try:
                    batch = fut.result()
                except ConfigurationError:
                    raise
                except Exception as exc:
                    failed += [(i, repr(exc)) for i in part]
                    cause = exc
                    continue
                if not batch.done.wait(max(deadline - time.monotonic(), 0.0)):
                    failed += [(i, "no confirm within publish_timeout") for i in part]
                    continue
                failed += [(part[i], err) for i, err in batch.errors.items()]
            if cause is not None:
                log.warning("queue %r: publish failed (%r); retrying", topo.name, cause)
            if any("unroutable" in err for _, err in failed):
                io.declared = Declared()
            errors = dict(failed)
            left = [i for i, _ in failed]
            if any("nacked" in err for _, err in failed):
                # A channel's quorum-queue session can stay stuck on a lost leader: retry
                # on a fresh channel.
                io.call(io.reset_pub)
            if left:
                log.warning(
                    "queue %r: %d message(s) not confirmed (%s); retrying",
                    topo.name,
                    len(left),
                    next(iter(errors.values())),
                )
                raise _Retry() from cause

        try:
            for retry in Retrying(
                stop=stop_after_attempt(max(self.settings.publish_retries, 1)),
                wait=wait_exponential(multiplier=0.1, max=2),
                retry=retry_if_exception_type(_Retry),
                reraise=True,
            ):
                with retry:
                    attempt()
        except _Retry as exc:
            sample = next(iter(errors.values()), "unknown")
            raise PublishError(
                f"{len(left)} of {len(messages)} message(s) to queue {topo.name!r} were not "
                f"confirmed by RabbitMQ at {self.settings.redacted_url()} after "
                f"{self.settings.publish_retries} attempts ({sample}); they may or may not "
                "be enqueued: publish them again"
            ) from exc.__cause__

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        topo = self.topology(spec)

        return self.io.call(lambda: topo.known_lanes(self._registry(topo)))

    def open(self, spec: QueueSpec, prefetch: int) -> Receiver:
        return RabbitMQReceiver(self, self.topology(spec), prefetch)

    def stats(self, spec: QueueSpec) -> QueueStats:
        topo = self.topology(spec)

        def op() -> QueueStats:
            registry = self._registry(topo)
            ch = self.io.admin()
            out = []
            for lane in topo.known_lanes(registry):
                ok = ch.queue_declare(topo.lane_queue(lane), passive=True)
                out.append(LaneStats(lane, ok.method.message_count, 0))
            delayed = 0
            for ms in registry.delays:
                try:
                    delayed += ch.queue_declare(
                        topo.delay_queue(ms), passive=True
                    ).method.message_count
                except pika.exceptions.ChannelClosedByBroker:
                    ch = self.io.admin()  # expired delay queue: nothing in it
            if delayed and out:
                out[0] = LaneStats(out[0].lane, out[0].ready, out[0].in_flight, delayed)
            dead = ch.queue_declare(topo.dlq, passive=True).method.message_count
            return QueueStats(queue=topo.name, lanes=out, dead_letters=dead)

        return self.io.call(op)

    def _read_dlq(
        self, topo: Topology, limit: int, take: bool
    ) -> list[tuple[Any, Any, Any, bytes]]:
        """Get up to ``limit`` dead letters on a fresh channel; requeue them unless ``take``."""
        ch = self.io.channel()
        got: list[tuple[Any, Any, bytes]] = []
        try:
            while len(got) < limit:
                method, props, body = ch.basic_get(topo.dlq, auto_ack=False)
                if method is None:
                    break
                got.append((method, props, body))
            if not take:
                ch.basic_nack(0, multiple=True, requeue=True)
        except BaseException:
            with contextlib.suppress(Exception):
                ch.close()
            raise
        if not take:
            ch.close()
        return [(ch, m, p, b) for m, p, b in got]

    def dead_letters(self, spec: QueueSpec, limit: int) -> list[DeadLetter]:
        topo = self.topology(spec)
        if limit <= 0:
            return []

        def op() -> list[DeadLetter]:
            self._ensure_base(topo)
            out = []
            for _ch, _m, props, body in self._read_dlq(topo, limit, take=False):
                item = _received(topo, props, body)
                out.append(
                    DeadLetter(
                        id=item.id,
                        queue=topo.name,
                        tenant=item.lane.tenant,
                        priority=item.lane.priority,
                        body=body,
                        headers=item.headers,
                        reason=reason_of(props.headers),
                        attempt=int((props.headers or {}).get(ATTEMPT, 1)),
                        enqueued_at=item.enqueued_at,
                    )
                )
            return out

        return self.io.call(op)

    def redrive(self, spec: QueueSpec) -> int:
        topo = self.topology(spec)
        moved = 0
        while True:

            def take() -> list[Any]:
                self._ensure_base(topo)
                return self._read_dlq(topo, 100, take=True)

            got = self.io.call(take)
            if not got:
                return moved
            ch = got[0][0]
            msgs = [copy_of(_received(topo, p, b), attempt=1) for _ch, _m, p, b in got]
            try:
                self.publish_to(topo, msgs)
            except BaseException:
                self.io.call(ch.close)  # unacked: back to the dead-letter queue
                raise
            last = got[-1][1].delivery_tag

            def done(ch: Any = ch, last: int = last) -> None:
                ch.basic_ack(last, multiple=True)
                ch.close()

            self.io.call(done)
            moved += len(got)

    def close(self) -> None:
        self.io.close()


class RabbitMQReceiver(Receiver):
    """One consumer: a channel of its own, pushed to when it reads one lane queue,
    polling with ``basic_get`` in lane order when it reads several."""

    def __init__(self, driver: RabbitMQDriver, topo: Topology, prefetch: int) -> None:
        self._driver = driver
        self._io = driver.io
        self._topo = topo
        self._prefetch = prefetch
        self._cond = threading.Condition()
        self._buffer: deque[Received] = deque()
        self._channel: Any = None
        self._gen = -1
        self._consuming: str | None = None
        self._ctag: str | None = None
        self._closed = False
        self._acks: list[Received] = []
        self._ack_lock = threading.Lock()
        self._io.on_lost.append(self._on_lost)

    def _on_lost(self) -> None:
        with self._cond:
            self._buffer.clear()  # unacked on a dead channel: the broker requeues them
            self._channel, self._consuming, self._ctag = None, None, None
            self._cond.notify_all()

    # -- I/O thread ------------------------------------------------------------------------

    def _chan(self) -> Any:
        if self._channel is None or not self._channel.is_open or self._gen != self._io.generation:
            self._io.connection()
            self._channel = self._io.channel()
            self._channel.basic_qos(prefetch_count=self._prefetch)
            self._gen = self._io.generation
            self._consuming = self._ctag = None
        return self._channel

    def _item(self, method: Any, props: Any, body: bytes) -> Received:
        token = (self._gen, self._channel, method.delivery_tag)
        return _received(self._topo, props, body, bool(method.redelivered), token)

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        item = self._item(method, props, body)
        with self._cond:
            self._buffer.append(item)
            if len(self._buffer) == 1:  # only an empty buffer has waiters
                self._cond.notify_all()

    def _consume(self, queue: str) -> None:
        ch = self._chan()
        if self._consuming == queue:
            return
        self._stop_consume()
        self._driver._ensure_base(self._topo)
        self._ctag = ch.basic_consume(queue, self._on_message)
        self._consuming = queue

    def _stop_consume(self) -> list[Received]:
        """Cancel the push consumer; what it had buffered goes back to the broker."""
        if self._consuming is None:
            return []
        ch = self._chan()
        with contextlib.suppress(pika.exceptions.AMQPError):
            ch.basic_cancel(self._ctag)
        self._consuming = self._ctag = None
        with self._cond:
            items = list(self._buffer)
            self._buffer.clear()
        return items

    def _get(self, queues: list[list[str]], max_count: int) -> list[Received]:
        ch = self._chan()
        out: list[Received] = []
        for level in queues:
            live = list(level)
            while live and len(out) < max_count:
                for q in list(live):
                    if len(out) >= max_count:
                        break
                    try:
                        method, props, body = ch.basic_get(q, auto_ack=False)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        ch = self._chan()  # a lane queue deleted under us: skip it
                        method = None
                    if method is None:
                        live.remove(q)
                    else:
                        out.append(self._item(method, props, body))
            if len(out) >= max_count:
                break
        return out

    # -- Receiver API (any thread) ------------------------------------------------------

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        ordered = self._topo.levels(lanes)
        if not ordered:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        if len(ordered) == 1 and len(ordered[0]) == 1:
            queue = ordered[0][0]
            while True:
                ch = self._channel
                # Already pushed to from this queue: no need to ask the I/O thread.
                if not (
                    self._consuming == queue
                    and self._gen == self._io.generation
                    and ch is not None
                    and ch.is_open
                ):
                    released = self._io.call(lambda: self._switch(queue))
                    if released:
                        self.release(released)
                with self._cond:
                    if not self._buffer:
                        self._cond.wait(max(deadline - time.monotonic(), 0.0))
                    out: list[Received] = []
                    while self._buffer and len(out) < max_count:
                        out.append(self._buffer.popleft())
                if out or time.monotonic() >= deadline or self._closed:
                    return out
        pause = 0.01
        while True:
            # One round trip to the I/O thread per poll: stop any push consumer, then get.
            released, got = self._io.call(
                lambda: (self._stop_consume(), self._get(ordered, max_count))
            )
            if released:
                self.release(released)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or self._closed:
                return got
            with self._cond:
                self._cond.wait(min(pause, remaining))
            pause = min(pause * 2, 0.2)

    def _switch(self, queue: str) -> list[Received]:
        released: list[Received] = []
        if self._consuming not in (None, queue):
            released = self._stop_consume()
        self._consume(queue)
        return released

    def _ack_now(self, item: Received) -> None:
        gen, channel, tag = item.token
        if gen != self._io.generation or channel is not self._channel or not channel.is_open:
            log.info("delivery %s came from a lost channel: the broker redelivers it", item.id)
            return
        channel.basic_ack(tag)

    def ack(self, item: Received) -> None:
        # Fire and forget: a lost ack means a redelivery, which at-least-once allows.
        # Acks wait in a list; the first one in an empty list asks the I/O thread to
        # send them all, each acking exactly its own delivery tag, in one write.
        with self._ack_lock:
            self._acks.append(item)
            if len(self._acks) > 1:
                return
        self._io.post(self._send_acks)

    def _send_acks(self) -> None:
        with self._ack_lock:
            items, self._acks = self._acks, []
        channel = self._channel
        if channel is None or self._gen != self._io.generation or not channel.is_open:
            for item in items:
                self._ack_now(item)  # each logged as coming from a lost channel
            return
        wire = _Wire(channel)
        for item in items:
            gen, ch, tag = item.token
            if gen != self._gen or ch is not channel:
                self._ack_now(item)
            else:
                wire.ack(tag)
        wire.flush()

    def nack(self, item: Received, delay: float | None) -> None:
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt + 1, delay)])
        self._io.call(lambda: self._ack_now(item))

    def dead_letter(self, item: Received, reason: str) -> None:
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt)], dead=reason)
        self._io.call(lambda: self._ack_now(item))

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: RabbitMQ holds a delivery as long as its channel lives."""

    def release(self, items: Sequence[Received]) -> None:
        if not items:
            return
        # Re-published with the same attempt, then acked: a plain requeue would count
        # as a delivery on quorum queues (x-delivery-count) and as "redelivered" on classic.
        self._driver.publish_to(self._topo, [copy_of(i, i.attempt) for i in items])

        def acks() -> None:
            for item in items:
                self._ack_now(item)

        self._io.call(acks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        try:
            leftover = self._io.call(self._stop_consume)
            if leftover:
                self.release(leftover)
        except GONE:
            pass  # the connection is gone, so the broker has requeued everything
        finally:

            def shut() -> None:
                if self._channel is not None and self._channel.is_open:
                    self._channel.close()
                self._channel = None

            with contextlib.suppress(Exception):
                self._io.call(shut)
            with contextlib.suppress(ValueError):
                self._io.on_lost.remove(self._on_lost)
