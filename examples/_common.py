"""Helpers shared by the examples: which broker to use, and worker threads."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import workq


def example_url(name: str, env: str = "WORKQ_URL") -> str:
    """The broker in ``$WORKQ_URL``, else an SQLite file in the temp directory."""
    url = os.environ.get(env)
    if url:
        return url
    folder = Path(tempfile.gettempdir()) / "workq-examples"
    return f"sqlite://{folder / (name + '.db')}"


def unique(name: str) -> str:
    """A queue name of its own for this run, so runs never see each other's messages."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextmanager
def workers(
    broker: workq.Broker,
    queue: str,
    handler: Callable[[workq.Delivery], Any],
    count: int,
    **options: Any,
) -> Iterator[list[workq.Worker]]:
    """Run ``count`` workers of ``queue`` on threads; stop them gracefully on exit."""
    started = [broker.worker(queue, handler, **options) for _ in range(count)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in started]
    for t in threads:
        t.start()
    for w in started:
        w.wait_running()
    try:
        yield started
    finally:
        for w in started:
            w.stop()
        for t in threads:
            t.join()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``predicate`` (checked every 20 ms); fail loudly after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout}s waiting for {what}")
        time.sleep(0.02)
