"""The frames workq writes itself, on pika's private API: the one module that uses it.

pika writes every frame with its own ``send()`` call, three per published message and
one per ack; building the frames here and writing them in few large chunks is most of
what makes a pipelined publish fast. Everything here is checked byte for byte against
pika's own marshalling (``tests/rabbitmq/test_frames.py``), and pika is pinned below
1.4 for it.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

import pika.adapters.select_connection
import pika.adapters.utils.io_services_utils
import pika.data
import pika.frame
import pika.spec

from .codec import Envelope

__all__ = [
    "Wire",
    "abort",
    "ack_frame",
    "deliveries",
    "enable_confirms",
    "forget",
    "header_payload",
    "idle_budget",
    "on_close",
    "read_now",
    "received_bytes",
    "send_now",
    "subscribe",
    "unsubscribe",
    "wait_events",
    "wait_led",
]

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


def header_payload(e: Envelope) -> bytes:
    """The content header frame's payload for ``e``, as ``pika.frame.Header`` marshals it."""
    flags = _P.FLAG_DELIVERY_MODE
    parts = []
    if e.content_type is not None:
        flags |= _P.FLAG_CONTENT_TYPE
        ct = e.content_type.encode()
        parts.append(_U8.pack(len(ct)) + ct)
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


#: Write frames to pika's transport once this many bytes are gathered.
WRITE_CHUNK = 256 * 1024
_FRAME_END = bytes([pika.spec.FRAME_END])
_FRAME_HEAD = struct.Struct(">BHI")
_ACK_FRAME = struct.Struct(">BHIIQBB")


def ack_frame(channel_number: int, tag: int) -> bytes:
    """A whole ``basic.ack`` frame for exactly one delivery tag (multiple=False)."""
    return _ACK_FRAME.pack(
        pika.spec.FRAME_METHOD, channel_number, 13, pika.spec.Basic.Ack.INDEX, tag, 0, 0xCE
    )


class Wire:
    """Frames for one channel, marshalled as pika would and written in few large chunks.

    pika writes every frame with its own ``send()`` call, three per published message
    and one per ack; gathering them is most of the cost of a pipelined publish.
    The channel must be open (checked once, on the I/O thread).
    """

    def __init__(self, channel: Any, direct: bool = False) -> None:
        impl = channel._impl
        impl._raise_if_not_open()
        self._conn = impl.connection
        #: Write on this thread at once (``send_now``) rather than leave the frames to
        #: the I/O loop's next pass (see ``IOThread.publish_here``).
        self._direct = direct
        self._num: int = impl.channel_number
        self._max_body: int = self._conn._body_max_length
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._parts: list[bytes] = []
        self._size = 0

    def publish(self, e: Envelope) -> None:
        key = (e.exchange, e.routing_key, e.mandatory)
        method = self._methods.get(key)
        if method is None:
            method = self._methods[key] = pika.frame.Method(
                self._num,
                pika.spec.Basic.Publish(
                    exchange=e.exchange, routing_key=e.routing_key, mandatory=e.mandatory
                ),
            ).marshal()
        header = header_payload(e)
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
        self._parts.append(ack_frame(self._num, tag))
        self._size += 21
        if self._size >= WRITE_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            if self._direct:
                send_now(self._conn, data)
            else:
                self._conn._output_marshaled_frames([data])


_PLAIN = pika.adapters.utils.io_services_utils._AsyncPlaintextTransport


def send_now(impl: Any, data: bytes) -> None:
    """Write ``data`` to the socket of a connection (pika's ``SelectConnection``) on
    this thread, which must hold the connection exclusively.

    pika only buffers what it is given and sends it on the I/O loop's next pass: from a
    thread other than the loop's, that costs a wake-up of the loop's thread before the
    bytes leave. Plain sockets with nothing buffered get the bytes at once; whatever
    the socket does not take (or a TLS socket, or any error) goes to pika's buffer, and
    the loop's poller, now watching for writability, sends it (or meets the error and
    closes the connection, as it would have).
    """
    impl.bytes_sent += len(data)
    impl.frames_sent += 1
    transport = impl._transport
    if type(transport) is _PLAIN and not transport._tx_buffers:
        try:
            sent = transport._sock.send(data)
        except OSError:
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    impl._adapter_emit_data(data)


_ACTIVE = _PLAIN._STATE_ACTIVE


def read_now(connection: Any) -> bool | None:
    """Read what the socket of a ``BlockingConnection`` holds and dispatch it, as its I/O
    loop does when the socket is readable, without the rest of the loop's pass: whether
    anything was read, or None if it could not be done so (then ``process_data_events``
    must make the full pass). Whole deliveries go to their consumers through
    :func:`deliveries`; pika reads the rest.

    A pass of ``process_data_events(time_limit=0)`` sets and cancels a timer, polls
    epoll and runs due timers around the read: at prefetch 1, where every delivery is
    read this way, that was about a fifth of the client's CPU a message. The full pass
    is still needed whenever anything but the socket may need it: a TLS transport,
    output buffered, a timer or callback due, events waiting for blocking channels, or
    a read that met the end of the stream or an error (pika's own read then concludes
    it: the connection's closing and its callbacks).

    Call with the connection held, on the thread that reads it.
    """
    impl = connection._impl
    transport = impl._transport
    if type(transport) is not _PLAIN or transport._tx_buffers or transport._state != _ACTIVE:
        return None
    if connection._ready_events or connection._channels_pending_dispatch:
        return None
    due = impl.ioloop._get_remaining_interval()
    if due is not None and due <= 0:
        return None
    try:
        data = transport._sock.recv(RECV_BYTES)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        data = b""
    if not data:
        transport._on_socket_readable()
        return None
    used = 0 if impl._frame_buffer else deliveries(impl, data)
    if used < len(data):
        impl._on_data_available(data[used:] if used else data)
    return None if transport._state != _ACTIVE else True


#: Bytes read at once by :func:`read_now` (pika reads 4 KiB at a time).
RECV_BYTES = 65536
_FRAME_HEAD = struct.Struct(">BHI")  # type, channel, size
_CONTENT_HEAD = struct.Struct(">HHQ")  # class id, weight, body size
_DELIVER = 0x003C003C  # Basic.Deliver: class 60, method 60
_END = 0xCE


def deliveries(impl: Any, data: bytes) -> int:
    """Dispatch the whole deliveries ``data`` starts with to their consumers, as pika
    does (same method, properties and body objects); returns how many bytes they took.

    pika decodes a delivery frame by frame: a frame object each, a callback lookup per
    frame, the content assembled in three steps; on a prefetch-1 consumer that was a
    third of the client's CPU a message. Here a delivery whose three (or more) frames
    are all in ``data``, in a row on one channel, goes straight to its consumer. It
    stops at anything else, which pika then reads from there: another frame type or
    method, a delivery cut short, a channel mid-way through other content, or a
    consumer tag pika would not dispatch (cancelled, unknown). Call only when pika
    holds no partial frame (``_frame_buffer`` empty).
    """
    pos, size, channels = 0, len(data), impl._channels
    unpack_head = _FRAME_HEAD.unpack_from
    while size - pos >= 7:
        kind, number, length = unpack_head(data, pos)
        end = pos + 7 + length
        if kind != 1 or length < 4 or end >= size or data[end] != _END:
            break
        if _U32.unpack_from(data, pos + 7)[0] != _DELIVER:
            break
        channel = channels.get(number)
        if channel is None or channel._content_assembler._method_frame is not None:
            break
        head = end + 1
        if size - head < 7:
            break
        kind, on, length = unpack_head(data, head)
        head_end = head + 7 + length
        if kind != 2 or on != number or head_end >= size or data[head_end] != _END:
            break
        _class, _weight, body_size = _CONTENT_HEAD.unpack_from(data, head + 7)
        at, parts, seen = head_end + 1, [], 0
        while seen < body_size and size - at >= 7:
            kind, on, length = unpack_head(data, at)
            body_end = at + 7 + length
            if kind != 3 or on != number or body_end >= size or data[body_end] != _END:
                break
            parts.append(data[at + 7 : body_end])
            seen += length
            at = body_end + 1
        if seen != body_size:
            break
        method = pika.spec.Basic.Deliver().decode(data, pos + 11)
        tag = method.consumer_tag
        consumer = channel._consumers.get(tag)
        if consumer is None or tag in channel._cancelled:
            break
        properties = pika.spec.BasicProperties()
        properties.decode(data[head + 19 : head_end])
        impl.frames_received += 2 + len(parts)
        impl.bytes_received += at - pos
        pos = at
        consumer(channel, method, properties, parts[0] if len(parts) == 1 else b"".join(parts))
    return pos


def idle_budget(connection: Any, limit: float) -> float | None:
    """How long the I/O loop of a ``BlockingConnection`` may wait for events (its next
    timer or ready callback, at most ``limit``); None if its poller is not epoll.

    Call with the connection held; then :func:`wait_events` without holding it.
    """
    poller = connection._impl.ioloop._poller
    if not isinstance(poller, pika.adapters.select_connection.EPollPoller):
        return None
    return float(min(poller._get_max_wait(), limit))


def wait_events(connection: Any, timeout: float) -> None:
    """Wait up to ``timeout`` until the I/O loop of a ``BlockingConnection`` has
    something to do: its socket is readable (or writable while output is buffered),
    or a thread-safe callback woke it. Only waits: ``process_data_events`` handles it.

    Runs without holding the connection, so other threads may use it meanwhile; epoll
    lets them change what is watched during the wait (a write that did not fit makes
    the socket's writability watched, which ends this wait).
    """
    poll = connection._impl.ioloop._poller._poll
    # Interrupted, or closed under us: process_data_events tells which.
    with contextlib.suppress(OSError, ValueError):
        poll.poll(timeout)


def wait_led(connection: Any, wake_fd: int, timeout: float) -> None:
    """As :func:`wait_events`, for a caller's thread that reads the connection in place
    of the I/O thread; also ends when ``wake_fd`` is readable, and drains it.

    pika's epoll object is itself a file descriptor, readable while any of its events
    is ready, so one ``poll`` waits on both.
    """
    poller = select.poll()
    with contextlib.suppress(OSError, ValueError):
        poller.register(connection._impl.ioloop._poller._poll.fileno(), select.POLLIN)
    poller.register(wake_fd, select.POLLIN)
    with contextlib.suppress(OSError, ValueError):
        poller.poll(max(timeout, 0.0) * 1000)
    with contextlib.suppress(OSError):
        while os.read(wake_fd, 512):
            pass


def enable_confirms(
    channel: Any,
    on_return: Callable[[Any, Any, Any, bytes], None],
    on_close: Callable[[Any, Exception], None],
    on_confirm: Callable[[Any], None],
) -> None:
    """Put a blocking channel in confirm mode with callbacks, as ``SelectConnection`` can.

    ``BlockingChannel`` waits for each confirm; its implementation channel takes
    callbacks, so a whole batch is sent before the first confirm arrives.
    """
    impl = channel._impl
    impl.add_on_return_callback(on_return)
    impl.add_on_close_callback(on_close)
    impl.confirm_delivery(ack_nack_callback=on_confirm)


def received_bytes(connection: Any) -> int:
    """How many bytes a ``BlockingConnection`` has read so far (any thread)."""
    return int(connection._impl.bytes_received)


def abort(connection: Any) -> None:
    """Cut a ``BlockingConnection``'s socket; safe from any thread.

    A blocking call waiting for a reply that never comes (a black-holed network) then
    fails at once with ``StreamLostError`` instead of waiting for the heartbeat.
    """
    transport = connection._impl._transport
    if transport is not None:
        transport._sock.shutdown(socket.SHUT_RDWR)


def subscribe(
    channel: Any, subscriptions: list[tuple[str, str]], on_message: Callable[..., None]
) -> None:
    """``basic.consume`` each ``(queue, consumer tag)`` with ``nowait``, in one write.

    pika sends one synchronous method at a time and waits for its reply before the
    next; a consumer of a thousand lanes would wait a thousand round trips. Deliveries
    reach ``on_message(channel, method, properties, body)`` straight from the I/O loop.
    A refusal (a missing queue) closes the channel, as it would anyway.
    """
    impl = channel._impl
    impl._raise_if_not_open()
    parts = []
    for queue, tag in subscriptions:
        impl._consumers[tag] = on_message
        parts.append(
            pika.frame.Method(
                impl.channel_number,
                pika.spec.Basic.Consume(queue=queue, consumer_tag=tag, nowait=True),
            ).marshal()
        )
    if parts:
        impl.connection._output_marshaled_frames([b"".join(parts)])


def unsubscribe(channel: Any, tags: list[str]) -> None:
    """``basic.cancel`` each consumer tag with ``nowait``, in one write.

    The callbacks stay registered: a delivery already on its way still reaches
    ``on_message`` (and is given back by the receiver, not rejected and counted as a
    delivery). :func:`forget` them once a later round trip has come back.
    """
    impl = channel._impl
    impl._raise_if_not_open()
    parts = [
        pika.frame.Method(
            impl.channel_number, pika.spec.Basic.Cancel(consumer_tag=tag, nowait=True)
        ).marshal()
        for tag in tags
    ]
    if parts:
        impl.connection._output_marshaled_frames([b"".join(parts)])


def forget(channel: Any, tags: list[str]) -> None:
    """Drop the callbacks of cancelled consumers (after a round trip: nothing more comes)."""
    consumers = channel._impl._consumers
    for tag in tags:
        consumers.pop(tag, None)


def on_close(channel: Any, callback: Callable[[Any, Exception], None]) -> None:
    """Call ``callback(channel, reason)`` when a ``BlockingChannel`` closes (the broker's
    reason: a refused ``basic.consume`` shows only there)."""
    channel._impl.add_on_close_callback(callback)
