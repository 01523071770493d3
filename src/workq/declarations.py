"""Queue declarations: the broker's record of them, and the adopt-or-conflict rule.

Both are I/O-free and shared: the sync and async brokers keep a :class:`SpecCache`, and
every backend that stores declarations decides with :func:`adopt_or_conflict`.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from .checks import check_bool
from .errors import ConfigurationError, QueueNotFound
from .names import check_queue
from .spec import QueueSpec

__all__ = ["SpecCache", "Stored", "adopt_or_conflict", "found", "make_spec", "passive_spec"]


def make_spec(name: str, settings: dict[str, Any]) -> QueueSpec:
    """A ``QueueSpec`` from declare()'s keywords; backend options go to ``options``."""
    known = {k: v for k, v in settings.items() if k in QueueSpec.SETTINGS}
    options = {k: v for k, v in settings.items() if k not in QueueSpec.SETTINGS}
    return QueueSpec(name, **known, options=options)


def passive_spec(name: str, passive: object, settings: dict[str, Any]) -> QueueSpec | None:
    """The spec to ask the driver about for ``declare(name, passive=True, **settings)``,
    or None for an ordinary declaration. A passive declaration reads what exists and
    sets nothing, so it takes no settings.

    >>> passive_spec("orders", True, {}).name, passive_spec("orders", False, {"lease": 9})
    ('orders', None)
    """
    try:
        check_bool("passive", passive)
    except TypeError as exc:
        raise ConfigurationError(f"queue {name!r}: {exc}") from None
    if not passive:
        return None
    if settings:
        raise ConfigurationError(
            f"declare({name!r}, passive=True) reads the queue as it exists and takes no "
            f"settings (got {', '.join(sorted(settings))}): leave them out, or declare "
            "without passive=True"
        )
    return QueueSpec(name)


def found(spec: QueueSpec, existing: QueueSpec | None, backend: str, where: str) -> QueueSpec:
    """What a passive declaration returns: the queue as the driver found it, or
    ``QueueNotFound`` naming the queue, the backend and the broker (``where``)."""
    if existing is None:
        raise QueueNotFound(
            f"queue {spec.name!r} does not exist on the {backend} broker at {where}, and "
            "declare(..., passive=True) creates nothing: create the queue first, or "
            "declare it without passive=True"
        )
    return existing


class Stored(NamedTuple):
    """A declaration as a backend stores it: the spec, and whether it came from first
    use (``implicit``) rather than from ``declare()``."""

    spec: QueueSpec
    implicit: bool


def adopt_or_conflict(
    stored: Stored | None, spec: QueueSpec, implicit: bool
) -> tuple[QueueSpec, Stored | None]:
    """Decide a declaration against what is stored: (the effective spec, what to store).

    - Nothing stored: ``spec`` is stored (marked implicit on first use).
    - First use (``implicit``) of a stored queue: adopt the stored spec.
    - ``declare()`` over a spec stored by first use: ``spec`` replaces it.
    - ``declare()`` over a declared spec: the same settings, or ``ConfigurationError``
      naming each that differs.

    The second item is None when nothing needs writing.

    >>> adopt_or_conflict(None, QueueSpec("q"), implicit=True)[1].implicit
    True
    """
    if stored is None:
        return spec, Stored(spec, implicit)
    if implicit:
        return stored.spec, None
    if stored.implicit:
        return spec, Stored(spec, False)
    stored.spec.check_same(spec)
    return stored.spec, None


class SpecCache:
    """Specs this broker has declared, so first use declares once and not per call."""

    def __init__(self) -> None:
        self._specs: dict[str, Stored] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> QueueSpec | None:
        """The spec of ``name`` if known here (checking the name first)."""
        try:
            entry = self._specs.get(name)
        except TypeError:  # unhashable: not a name at all
            entry = None
        if entry is None:
            check_queue(name)
            return None
        return entry.spec

    def explicit(self, spec: QueueSpec) -> QueueSpec | None:
        """A matching spec already declared here, or None if the driver must be asked."""
        with self._lock:
            entry = self._specs.get(spec.name)
        if entry is None or entry.implicit:
            return None
        entry.spec.check_same(spec)
        return entry.spec

    def put(self, spec: QueueSpec, implicit: bool) -> QueueSpec:
        with self._lock:
            self._specs[spec.name] = Stored(spec, implicit)
        return spec
