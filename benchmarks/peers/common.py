"""What every peer adapter shares: the paths, the message body, timing helpers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

#: Every peer sends the same payload; framing (headers, task envelopes) is the library's own.
BODY = b"x" * 256


class NotApplicable(Exception):
    """This peer has no way to do this path at the same durability; the message says why."""


@dataclass(frozen=True)
class Path:
    name: str
    unit: str
    higher_is_better: bool
    about: str


PATHS = {
    p.name: p
    for p in [
        Path("publish_single", "msg/s", True, "one publish at a time, each durably confirmed"),
        Path("publish_batch", "msg/s", True, "the library's batch or pipelined publish"),
        Path("consume_p1", "msg/s", True, "consume + ack one at a time, prefetch 1"),
        Path("consume_p100", "msg/s", True, "consume + ack, prefetch 100"),
        Path("consume", "msg/s", True, "consume, commit after processing (at-least-once)"),
        Path("skewed", "s", False, "4 workers, 54 x 0.05 s + 6 x 1.5 s jobs: makespan"),
        Path("head_of_line", "s", False, "200 fast jobs behind one 2 s job: time to finish"),
        Path("api_calls", "calls/msg", False, "SQS API calls per message, publish + consume"),
        Path("long_handler", "runs/msg", False, "handler 5 s, visibility 2 s: runs per message"),
    ]
}


@dataclass
class Ctx:
    """The broker under test and the sizes of this run."""

    url: str  # the workq URL
    n: int  # messages for batch publish and consume
    n_single: int  # messages for single publish
    info: dict[str, str] = field(default_factory=dict)


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def skewed_jobs() -> list[float]:
    """54 short and 6 long jobs, a long one every 10, so prefetching grabs them early."""
    jobs = [0.05] * 60
    for i in range(0, 60, 10):
        jobs[i] = 1.5
    return jobs


class Countdown:
    """Counts handled messages from any thread; ``wait`` until ``n`` are done."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.lock = threading.Lock()
        self.done = threading.Event()
        if n <= 0:
            self.done.set()

    def hit(self, k: int = 1) -> None:
        with self.lock:
            self.left -= k
            if self.left <= 0:
                self.done.set()

    def wait(self, timeout: float, what: str) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{what}: {self.left} messages still missing after {timeout}s")


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def seconds(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
