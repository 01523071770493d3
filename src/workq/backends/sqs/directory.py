"""Where a queue's lanes are on SQS: queue names and their URLs (cached), queues made
on demand, and the lanes of a queue, listed from SQS at most every ``list_every``
seconds and in between the ones made here or told of by the doorbell."""

from __future__ import annotations

import threading
import time
from typing import Any

from ...lanes import Lane
from ...spec import QueueSpec
from .client import QueueMissing, SQSCalls, SQSError
from .codec import MAX_VISIBILITY, whole_seconds
from .naming import TAG, check_prefix, lane_name, lane_prefix, lane_tags, parse_lane
from .settings import SQSSettings

__all__ = ["LIST_EVERY", "Directory"]

#: Longest time (s) between two ListQueues of one queue's lanes.
LIST_EVERY = 30.0
RETENTION = "1209600"  # 14 days, SQS's longest: a backlog must not expire silently


def _ordered(lanes: set[Lane]) -> list[Lane]:
    return sorted(lanes, key=lambda lane: (-lane.priority, lane.tenant or ""))


class Directory:
    """The SQS queues of workq's queues and lanes, for one connection."""

    def __init__(self, settings: SQSSettings, sqs: SQSCalls) -> None:
        self.sqs = sqs
        self.prefix = check_prefix(settings.queue_prefix)
        self.exact = settings.default_lane == "queue"
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._known: dict[str, set[Lane]] = {}
        self._tag_tenants: dict[str, str | None] = {}
        self._listed: dict[str, tuple[float, set[Lane]]] = {}
        # The last answer of lanes() per queue, with what it was made from (the version
        # of the known lanes, the listing): an idle consumer asks every second, and the
        # same list (the same object, which the core then skips) costs no set union and
        # no sort of every lane.
        self._version = 0
        self._answers: dict[str, tuple[int, set[Lane], list[Lane]]] = {}
        #: Lanes are listed from SQS at most this often (s); the doorbell tells of new ones.
        self.list_every = max(settings.lane_refresh, min(LIST_EVERY, settings.lane_sweep))

    def name_of(self, lane: Lane) -> str:
        """The SQS queue name of a lane."""
        return lane_name(self.prefix, lane, self.exact)

    def find(self, queue: str, name: str) -> str | None:
        with self._lock:
            url = self._urls.get(name)
        if url is not None:
            return url
        try:
            url = self.sqs.call(queue, self.sqs.client.get_queue_url, QueueName=name)["QueueUrl"]
        except QueueMissing:
            return None
        with self._lock:
            self._urls[name] = url
        return url

    def create(self, queue: str, name: str, attrs: dict[str, str], tags: dict[str, str]) -> str:
        try:
            url = self.sqs.call(
                queue,
                self.sqs.client.create_queue,
                QueueName=name,
                Attributes={"MessageRetentionPeriod": RETENTION, **attrs},  # type: ignore[dict-item]
                tags=tags,
            )["QueueUrl"]
        except SQSError as exc:
            if "AlreadyExists" not in exc.code:
                raise
            # Made earlier with other attributes (another lease): use it as it is.
            url = self.sqs.call(queue, self.sqs.client.get_queue_url, QueueName=name)["QueueUrl"]
        with self._lock:
            self._urls[name] = url
        return url

    def lane_url(self, spec: QueueSpec, lane: Lane, create: bool) -> str | None:
        """The SQS URL of a lane; made first when ``create``, else None if it is missing."""
        name = self.name_of(lane)
        with self._lock:
            url = self._urls.get(name)
        if url is not None:
            return url
        if create:
            tags = lane_tags(lane)
            visibility = str(whole_seconds(spec.lease, MAX_VISIBILITY) or 1)
            url = self.create(spec.name, name, {"VisibilityTimeout": visibility}, tags)
        else:
            url = self.find(spec.name, name)
            if url is None:
                return None
        with self._lock:
            self._add_known(spec.name, lane)
        return url

    def forget_name(self, name: str) -> None:
        """An SQS queue vanished: stop using its cached URL."""
        with self._lock:
            self._urls.pop(name, None)

    def discovered(self, queue: str, lane: Lane) -> None:
        """A doorbell note told of a lane: the next ``lanes()`` lists it."""
        with self._lock:
            self._add_known(queue, lane)

    def forget(self, spec: QueueSpec, lane: Lane) -> None:
        """A lane's SQS queue vanished (deleted by hand): stop using its cached URL."""
        with self._lock:
            self._urls.pop(self.name_of(lane), None)
            known = self._known.get(spec.name, set())
            if lane in known:
                known.discard(lane)
                self._version += 1

    def lanes(self, spec: QueueSpec) -> list[Lane]:
        """The queue's lanes: listed from SQS every ``LIST_EVERY`` seconds at most, and
        in between the lanes listed, made here, or told of by the doorbell."""
        now = time.monotonic()
        with self._lock:
            listed = self._listed.get(spec.name)
            if listed is not None and now - listed[0] < self.list_every:
                return self._answer(spec.name, listed[1])
        found = self._list(spec)
        with self._lock:
            last = self._listed.get(spec.name)
            if last is not None and last[1] == found:
                found = last[1]  # the same set: the last answer still holds
            self._listed[spec.name] = (now, found)
            return self._answer(spec.name, found)

    def _add_known(self, queue: str, lane: Lane) -> None:
        known = self._known.setdefault(queue, set())
        if lane not in known:
            known.add(lane)
            self._version += 1

    def _answer(self, queue: str, listed: set[Lane]) -> list[Lane]:
        """The listing and the lanes known here, in order (lock held). ListQueues on
        AWS lags new queues by seconds: the lanes made here are added."""
        last = self._answers.get(queue)
        if last is not None and last[0] == self._version and last[1] is listed:
            return last[2]
        lanes = _ordered(listed | self._known.get(queue, set()))
        self._answers[queue] = (self._version, listed, lanes)
        return lanes

    def _list(self, spec: QueueSpec) -> set[Lane]:
        found: set[Lane] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"QueueNamePrefix": lane_prefix(self.prefix, spec.name)}
            kwargs["MaxResults"] = 1000
            if token:
                kwargs["NextToken"] = token
            page = self.sqs.call(spec.name, self.sqs.client.list_queues, **kwargs)
            for url in page.get("QueueUrls", []):
                lane = self._lane_of(spec, url)
                if lane is not None:
                    found.add(lane)
                    with self._lock:
                        self._urls[self.name_of(lane)] = url
            token = page.get("NextToken")
            if not token:
                break
        default = Lane(spec.name)
        # Named as the queue, so not under the listing's prefix: look it up.
        if self.exact and self.find(spec.name, self.name_of(default)) is not None:
            found.add(default)
        return found

    def _lane_of(self, spec: QueueSpec, url: str) -> Lane | None:
        name = url.rsplit("/", 1)[-1]
        parsed = parse_lane(self.prefix, spec.name, name, self.exact)
        if parsed is None:
            return None
        priority, tenant, hashed = parsed
        if hashed:
            if url not in self._tag_tenants:
                try:
                    tags = self.sqs.call(spec.name, self.sqs.client.list_queue_tags, QueueUrl=url)
                except QueueMissing:
                    return None
                self._tag_tenants[url] = tags.get("Tags", {}).get(TAG + "tenant")
            tenant = self._tag_tenants[url]
            if tenant is None or self.name_of(Lane(spec.name, tenant, priority)) != name:
                return None
        return Lane(spec.name, tenant, priority)
