"""Backends and their registry. Client libraries are imported only inside their package.

A backend is described by a :class:`Backend` (name, URL schemes, settings class, sync
driver factory, optional async driver factory, the pip extra it needs) and registered
under the ``workq.backends`` entry-point group. workq's own backends register the same
way (``pyproject.toml``); :data:`BUILTIN` also lists them so a source tree that is not
installed still works. Settings classes and factories are named as ``"module:attr"``
strings, loaded on first use, so listing backends imports no client library.

A third-party package registers its backend in its own ``pyproject.toml``::

    [project.entry-points."workq.backends"]
    mine = "workq_mine:BACKEND"

with ``BACKEND = workq.backends.Backend("mine", ("mine",), "workq_mine:Settings",
"workq_mine:create_driver")``; ``workq.connect("mine://...")`` then finds it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend_settings import BackendSettings
from ..driver import AsyncDriver, Driver, threaded
from ..errors import ConfigurationError

__all__ = [
    "BUILTIN",
    "GROUP",
    "Backend",
    "backends",
    "by_name",
    "by_scheme",
    "create_async_driver",
    "create_driver",
    "schemes",
]

log = logging.getLogger("workq")

#: The entry-point group backends register under.
GROUP = "workq.backends"


def _load(ref: Any, what: str, backend: str, extra: str | None) -> Any:
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"the {backend} backend's {what} {ref!r} cannot be imported: {exc}"
            ) from exc
        hint = f"pip install 'pyworkq[{extra}]'" if extra else f"install {exc.name}"
        raise ConfigurationError(
            f"the {backend} backend needs {exc.name!r}, which is not installed: {hint}"
        ) from exc
    try:
        return getattr(module, attr) if attr else module
    except AttributeError as exc:
        raise ConfigurationError(f"the {backend} backend's {what} {ref!r} does not exist") from exc


@dataclass(frozen=True)
class Backend:
    """One backend: what a registry entry point points at.

    :param name: the ``backend`` discriminator of its settings (``settings.backend``).
    :param schemes: the URL schemes it serves (``"amqp"``, ``"amqps"``...).
    :param settings: its settings class (a ``workq.backend_settings.BackendSettings`` subclass), or
        ``"module:Class"``.
    :param driver: ``create_driver(settings) -> Driver``, or ``"module:function"``.
    :param async_driver: ``async create_async_driver(settings) -> AsyncDriver``, or its
        name; ``None`` runs the sync driver on threads for ``workq.aio``.
    :param extra: the pip extra that installs its client library, for error messages.

    >>> Backend("memory", ("memory",), "workq.backends.memory.settings:MemorySettings",
    ...         "workq.backends.memory.driver:create_driver").schemes
    ('memory',)
    """

    name: str
    schemes: tuple[str, ...]
    settings: str | type[BackendSettings]
    driver: str | Callable[[Any], Driver]
    async_driver: str | Callable[[Any], Any] | None = None
    extra: str | None = None

    def settings_class(self) -> type[BackendSettings]:
        cls: type[BackendSettings] = _load(self.settings, "settings", self.name, self.extra)
        return cls

    def create_driver(self, settings: BackendSettings) -> Driver:
        factory = _load(self.driver, "driver factory", self.name, self.extra)
        driver: Driver = factory(settings)
        return driver

    async def create_async_driver(self, settings: BackendSettings) -> AsyncDriver:
        if self.async_driver is not None:
            factory = _load(self.async_driver, "async driver factory", self.name, self.extra)
            driver: AsyncDriver = await factory(settings)
            return driver
        import asyncio  # here, not at the top: sync programs never load asyncio

        factory = _load(self.driver, "driver factory", self.name, self.extra)
        sync: Driver = await asyncio.to_thread(factory, settings)
        return threaded(sync)


def _builtin(name: str, cls: str, schemes: tuple[str, ...], extra: str | None) -> Backend:
    pkg = f"workq.backends.{name}"
    driver = f"{pkg}.driver"
    has_async = name in ("rabbitmq", "kafka")
    return Backend(
        name,
        schemes,
        f"{pkg}.settings:{cls}",
        f"{driver}:create_driver",
        f"{driver}:create_async_driver" if has_async else None,
        extra,
    )


MEMORY = _builtin("memory", "MemorySettings", ("memory",), None)
SQLITE = _builtin("sqlite", "SqliteSettings", ("sqlite",), None)
RABBITMQ = _builtin("rabbitmq", "RabbitMQSettings", ("amqp", "amqps"), "rabbitmq")
SQS = _builtin("sqs", "SQSSettings", ("sqs",), "sqs")
KAFKA = _builtin("kafka", "KafkaSettings", ("kafka",), "kafka")

#: workq's own backends, registered through the entry points too.
BUILTIN: tuple[Backend, ...] = (MEMORY, SQLITE, RABBITMQ, SQS, KAFKA)

_lock = threading.Lock()
_found: dict[str, Backend] | None = None


def backends(refresh: bool = False) -> dict[str, Backend]:
    """Every registered backend by name: the built-ins, then the entry points.

    ``refresh=True`` reads the entry points again (after installing a package).
    """
    global _found
    with _lock:
        if _found is not None and not refresh:
            return _found
        # Reading every installed distribution's entry points takes tens of ms or more
        # (200 ms in a full dev venv on a loaded machine): a program using only built-in
        # backends never pays it (see by_scheme).
        from importlib.metadata import entry_points

        found = {b.name: b for b in BUILTIN}
        for ep in entry_points(group=GROUP):
            try:
                backend = ep.load()
                if callable(backend) and not isinstance(backend, Backend):
                    backend = backend()
            except Exception as exc:
                log.warning("workq backend entry point %r could not be loaded: %s", ep.name, exc)
                continue
            if not isinstance(backend, Backend):
                log.warning(
                    "workq backend entry point %r is a %s, not a workq.backends.Backend",
                    ep.name,
                    type(backend).__name__,
                )
                continue
            known = found.get(backend.name)
            if known is not None and known != backend and known not in BUILTIN:
                log.warning("two workq backends are named %r; using the first", backend.name)
                continue
            found.setdefault(backend.name, backend)
        _found = found
        return found


def by_scheme(scheme: str) -> Backend | None:
    """The backend serving a URL scheme, or ``None``; re-reads the entry points once.

    A built-in backend's scheme needs no look at the entry points: built-ins come first
    in :func:`backends`, so an installed backend can never take their schemes.
    """
    builtin = next((b for b in BUILTIN if scheme in b.schemes), None)
    if builtin is not None:
        return builtin
    for attempt in (False, True):
        for backend in backends(refresh=attempt).values():
            if scheme in backend.schemes:
                return backend
    return None


def by_name(name: str) -> Backend:
    """The backend named ``name``; ``ConfigurationError`` listing the known ones if none.

    Built-in names are found without reading the entry points, as in :func:`by_scheme`.
    """
    builtin = next((b for b in BUILTIN if b.name == name), None)
    if builtin is not None:
        return builtin
    for attempt in (False, True):
        found = backends(refresh=attempt).get(name)
        if found is not None:
            return found
    known = ", ".join(sorted(backends()))
    raise ConfigurationError(f"no workq backend named {name!r}; known backends: {known}")


def schemes() -> list[str]:
    """Every URL scheme some backend serves."""
    return sorted({s for b in backends().values() for s in b.schemes})


def create_driver(settings: BackendSettings) -> Driver:
    return by_name(settings.backend).create_driver(settings)


async def create_async_driver(settings: BackendSettings) -> AsyncDriver:
    return await by_name(settings.backend).create_async_driver(settings)
