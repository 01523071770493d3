"""``workq.aio`` on Kafka: the sync driver on threads, but for publishing."""

from __future__ import annotations

from collections.abc import Sequence

from ...driver import Outgoing, _ThreadedDriver
from ...spec import QueueSpec
from .driver import KafkaDriver

__all__ = ["AsyncKafkaDriver"]


class AsyncKafkaDriver(_ThreadedDriver):
    """The sync driver on threads for ``workq.aio``, but for publishing: records are
    produced on the event loop and their delivery reports wake it, without a round trip
    through an executor thread (which cost two thread hand-offs a publish)."""

    sync: KafkaDriver

    def __init__(self, driver: KafkaDriver, max_threads: int = 32) -> None:
        super().__init__(driver, max_threads)

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
