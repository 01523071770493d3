"""The broker's record of declared queues, shared by the sync and async brokers."""

from __future__ import annotations

import threading
from typing import Any

from .spec import QueueSpec


def make_spec(name: str, settings: dict[str, Any]) -> QueueSpec:
    """A ``QueueSpec`` from declare()'s keywords; backend options go to ``options``."""
    known = {k: v for k, v in settings.items() if k in QueueSpec.SETTINGS}
    options = {k: v for k, v in settings.items() if k not in QueueSpec.SETTINGS}
    return QueueSpec(name, **known, options=options)


class SpecCache:
    """Specs this broker has declared, so first use declares once and not per call."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[QueueSpec, bool]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> QueueSpec | None:
        with self._lock:
            entry = self._specs.get(name)
        return entry[0] if entry else None

    def explicit(self, spec: QueueSpec) -> QueueSpec | None:
        """A matching spec already declared here, or None if the driver must be asked."""
        with self._lock:
            entry = self._specs.get(spec.name)
        if entry is None or entry[1]:
            return None
        entry[0].check_same(spec)
        return entry[0]

    def put(self, spec: QueueSpec, implicit: bool) -> QueueSpec:
        with self._lock:
            self._specs[spec.name] = (spec, implicit)
        return spec
