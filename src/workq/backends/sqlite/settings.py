"""Settings of the embedded SQLite backend (no client library)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult

from pydantic import Field

from ...backend_settings import BackendSettings
from ...errors import ConfigurationError

__all__ = ["SqliteSettings"]


class SqliteSettings(BackendSettings):
    """``sqlite:///abs/path.db`` (absolute) or ``sqlite://relative/path.db``.

    ``poll_interval``: seconds between checks for new messages written by other
    processes (a publish in the same process wakes its consumers at once).
    ``busy_timeout``: seconds a call waits for another process's write lock.
    ``synchronous``: ``FULL`` (default) fsyncs the write-ahead log on every commit, so a
    published message survives power loss; ``NORMAL`` survives a process crash only.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    backend: Literal["sqlite"] = "sqlite"
    #: The database file (from the URL); missing parent directories are created.
    path: str
    #: Seconds between checks for messages written by other processes.
    poll_interval: float = Field(0.05, gt=0)
    #: Seconds a call waits for another process's write lock.
    busy_timeout: float = Field(30.0, gt=0)
    #: ``FULL``: fsync the write-ahead log on every commit (survives power loss);
    #: ``NORMAL``: survives a process crash only.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"

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
