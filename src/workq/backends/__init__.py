"""Backends: one package each. Client libraries are imported only inside their package.

Each package has ``settings.py`` (no client import) and exposes from ``driver.py``:
``create_driver(settings) -> Driver`` and optionally
``create_async_driver(settings) -> AsyncDriver`` (default: the sync one on threads).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..config import BackendSettings
from ..driver import AsyncDriver, Driver, threaded
from ..errors import ConfigurationError

_EXTRAS = {"rabbitmq": "rabbitmq", "sqs": "sqs", "kafka": "kafka"}


def _module(settings: BackendSettings) -> ModuleType:
    name = f"workq.backends.{settings.backend}.driver"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"workq.backends.{settings.backend}"):
            raise ConfigurationError(f"no workq backend named {settings.backend!r}") from exc
        extra = _EXTRAS.get(settings.backend, settings.backend)
        raise ConfigurationError(
            f"the {settings.backend} backend needs {exc.name!r}, which is not installed: "
            f"pip install 'pyworkq[{extra}]'"
        ) from exc


def create_driver(settings: BackendSettings) -> Driver:
    driver: Driver = _module(settings).create_driver(settings)
    return driver


async def create_async_driver(settings: BackendSettings) -> AsyncDriver:
    module = _module(settings)
    factory = getattr(module, "create_async_driver", None)
    if factory is not None:
        driver: AsyncDriver = await factory(settings)
        return driver
    import asyncio

    sync: Driver = await asyncio.to_thread(module.create_driver, settings)
    return threaded(sync)
