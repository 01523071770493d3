"""``workq.aio`` on Kafka: the sync driver on threads, but for publishing, acks and
receiving what is already buffered."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ...driver import AsyncReceiver, Outgoing, Received, _ThreadedDriver, _ThreadedReceiver
from ...lanes import Lane
from ...spec import QueueSpec
from .driver import KafkaDriver
from .receiver import KafkaReceiver

__all__ = ["AsyncKafkaDriver"]


class _AsyncKafkaReceiver(_ThreadedReceiver):
    """The sync receiver on threads, but for acks and for receiving what is buffered.

    An ack only marks an offset done under the receiver's lock (the poll thread
    commits), so it is made on the event loop (``ack_on_loop``). On an executor thread
    each ack cost two thread hand-offs, nine tenths of a consume."""

    sync: KafkaReceiver

    def __init__(self, receiver: KafkaReceiver, pool: ThreadPoolExecutor) -> None:
        super().__init__(receiver, pool, ack_on_loop=receiver.ack)

    async def receive(
        self, lanes: Sequence[Lane], max_count: int, timeout: float
    ) -> list[Received]:
        if len(lanes) == 1:
            # What the poll thread has buffered is taken here, without waiting (only the
            # receiver's lock): at prefetch 1 a thread hop per message halved the rate.
            # Only for one lane: with several, a receive that may wait holds back a lower
            # lane's messages while a higher one has not reported (``partitions.pick``);
            # with one there is nothing to hold back for, so waiting 0 picks the same.
            items = self.sync.receive(lanes, max_count, 0.0)
            if items:
                return items
        return await super().receive(lanes, max_count, timeout)


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
            return _AsyncKafkaReceiver(receiver, self._pool)
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
