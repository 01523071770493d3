"""A backend from outside workq: the memory store under its own name and URL scheme.

It is installed for the tests as a distribution of its own (a ``.dist-info`` directory
with an ``entry_points.txt``, see test_registry.py), found the way pip-installed
backends are: through the ``workq.backends`` entry-point group.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from workq.backend_settings import BackendSettings
from workq.backends import Backend
from workq.backends.memory.driver import MemoryDriver
from workq.backends.memory.driver import create_driver as memory_driver
from workq.backends.memory.settings import MemorySettings


class WrappedSettings(BackendSettings):
    """``wrapped://`` (a private store) or ``wrapped://NAME`` (shared in the process)."""

    schemes: ClassVar[tuple[str, ...]] = ("wrapped",)
    backend: Literal["wrapped"] = "wrapped"
    name: str | None = None

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        return {"name": url.netloc or None}


def create_driver(settings: WrappedSettings) -> MemoryDriver:
    name = None if settings.name is None else f"wrapped-{settings.name}"
    driver = memory_driver(MemorySettings(name=name))
    driver.capabilities = dataclasses.replace(driver.capabilities, backend="wrapped")
    return driver


BACKEND = Backend(
    name="wrapped",
    schemes=("wrapped",),
    settings=WrappedSettings,
    driver=create_driver,
)
