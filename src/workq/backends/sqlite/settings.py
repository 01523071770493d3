"""Settings of the embedded SQLite backend (no client library)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from ...config import BackendSettings
from ...errors import ConfigurationError


class SqliteSettings(BackendSettings):
    """``sqlite:///abs/path.db`` (absolute) or ``sqlite://relative/path.db``."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    backend: Literal["sqlite"] = "sqlite"
    path: str
    poll_interval: float = 0.05
    busy_timeout: float = 30.0

    @classmethod
    def url_fields(cls, url: SplitResult) -> dict[str, Any]:
        path = url.netloc + url.path
        if not path:
            raise ConfigurationError(
                "sqlite URL names no file: use sqlite:///abs/path.db or sqlite://relative.db"
            )
        return {"path": path}

    def redacted_url(self) -> str:
        return f"sqlite://{self.path}"
