"""Settings of the in-process memory backend (no client library)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from ...backend_settings import BackendSettings

__all__ = ["MemorySettings"]


class MemorySettings(BackendSettings):
    """``memory://`` (a private store) or ``memory://NAME`` (shared within the process)."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    backend: Literal["memory"] = "memory"
    #: The store's name: connections naming the same store share it; ``None``: private.
    name: str | None = None

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        return {"name": url.netloc or None}

    def redacted_url(self) -> str:
        return f"memory://{self.name or ''}"
