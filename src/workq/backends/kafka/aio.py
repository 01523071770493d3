"""``workq.aio`` on Kafka: the sync driver on threads, but for publishing, acks and
receiving what is already buffered (made on the event loop)."""

from __future__ import annotations

from collections.abc import Sequence

from ...driver import AsyncReceiver, Outgoing, _ThreadedDriver, _ThreadedReceiver
from ...spec import QueueSpec
from .driver import KafkaDriver
from .receiver import KafkaReceiver

__all__ = ["AsyncKafkaDriver"]


class AsyncKafkaDriver(_ThreadedDriver):
    """The sync driver on threads for ``workq.aio``, but for publishing: records are
    produced on the event loop and their delivery reports wake it, without a round trip
    through an executor thread (which cost two thread hand-offs a publish)."""

    sync: KafkaDriver

    def __init__(self, driver: KafkaDriver, max_threads: int = 32) -> None:
        super().__init__(driver, max_threads)

    async def open(self, spec: QueueSpec, prefetch: int) -> AsyncReceiver:
        receiver = await self._call(self.sync.open, spec, prefetch)
        if isinstance(receiver, KafkaReceiver):
            # An ack only marks an offset done under the receiver's lock (the poll
            # thread commits): on an executor thread each cost two thread hand-offs,
            # nine tenths of a consume.
            return _ThreadedReceiver(
                receiver, self._pool, ack_on_loop=receiver.ack, buffered=receiver.buffered
            )
        # A share group's ack is a client call: it stays on a thread.
        return _ThreadedReceiver(receiver, self._pool)

    async def publish(self, spec: QueueSpec, messages: Sequence[Outgoing]) -> None:
        sync = self.sync
        spec, records = sync._records(spec, messages)
        topics = sorted({r.topic for r in records})
        # Making topics is an admin round trip: on a thread, and only the first time.
        new = {} if sync._known(topics) else await self._call(sync._ensure, topics, spec)
        if sync._known([sync.naming.signal_topic(spec.name)]):
            sync.notes.write(spec, records, new)  # queues a record at most: no I/O wait
        else:
            await self._call(sync.notes.write, spec, records, new)  # may make the topic
        try:
            await sync._publisher.send_async(records)
        finally:
            if new:
                await self._call(sync._signal, spec, new)
