"""Queue declarations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .checks import check_bool, check_int, check_seconds
from .errors import ConfigurationError
from .names import check_queue

__all__ = ["QueueSpec"]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """What a queue is: its name and delivery rules.

    ``broker.declare(name, **settings)`` builds one and returns it; declaring is
    idempotent, and a declaration that disagrees with the existing queue raises
    ``ConfigurationError`` naming each difference.

    Args:
        name: The queue's name, ``[A-Za-z0-9_-]`` (at most 64 characters).
        max_priority: Highest priority a message may have, ``0..255``. Lane backends
            pay nothing for a level no message uses; a RabbitMQ classic queue is a
            native priority queue of this many levels from its declaration (a cost per
            level): declare ``0`` there if messages have no priority.
        max_attempts: Deliveries before a nacked (or repeatedly abandoned) message goes
            to the dead-letter queue, ``>= 1``.
        retry_delay: Base of a worker's exponential backoff in seconds,
            ``retry_delay * 2 ** (attempt - 1)`` capped at five minutes, ``>= 0``.
        lease: Seconds a delivery is held for a consumer on lease backends (SQLite,
            memory, SQS), extended every ``lease / 3`` while it is held, ``> 0``.
        dead_letter: Keep dead letters in the queue's dead-letter queue; ``False`` drops
            them (each drop logged as a warning).
        options: Backend-specific settings (``queue_type="classic"`` on RabbitMQ,
            ``ordering="key"`` on Kafka...); each backend validates its own and refuses
            unknown ones.

    Raises:
        ConfigurationError: A setting is out of range or the name is not a valid queue
            name; the message names the setting and its allowed values.

    Examples:
        >>> QueueSpec("reports", max_priority=9, max_attempts=5).lease
        30.0

        Usually made by declaring the queue:

        ```python
        spec = broker.declare("reports", max_priority=9, max_attempts=5, lease=60.0)
        ```
    """

    #: The delivery settings, each a field: what ``declare()`` takes besides options.
    SETTINGS: ClassVar[tuple[str, ...]] = (
        "max_priority",
        "max_attempts",
        "retry_delay",
        "lease",
        "dead_letter",
    )

    name: str
    max_priority: int = 9
    max_attempts: int = 5
    retry_delay: float = 1.0
    lease: float = 30.0
    dead_letter: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_queue(self.name)
        try:
            check_int("max_priority", self.max_priority, 0, 255)
            check_int("max_attempts", self.max_attempts, 1)
            retry_delay = check_seconds("retry_delay", self.retry_delay)
            lease = check_seconds("lease", self.lease, positive=True)
            check_bool("dead_letter", self.dead_letter)
            if not isinstance(self.options, Mapping):
                raise TypeError(f"options={self.options!r} must be a mapping of option names")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"queue {self.name!r}: {exc}") from None
        object.__setattr__(self, "retry_delay", retry_delay)
        object.__setattr__(self, "lease", lease)
        object.__setattr__(self, "options", dict(self.options))

    def conflicts(self, other: QueueSpec) -> list[str]:
        """Names of the settings on which two declarations of one queue disagree."""
        return [
            f.name
            for f in fields(self)
            if f.name != "name" and getattr(self, f.name) != getattr(other, f.name)
        ]

    def check_same(self, other: QueueSpec) -> None:
        """Raise ``ConfigurationError`` naming each setting that ``other`` changes."""
        diff = self.conflicts(other)
        if diff:
            detail = ", ".join(
                f"{name}: declared {getattr(self, name)!r}, now {getattr(other, name)!r}"
                for name in diff
            )
            raise ConfigurationError(
                f"queue {self.name!r} is already declared with other settings ({detail}); "
                "declare it the same way everywhere, or delete and re-create it"
            )

    def check_options(self, backend: str, allowed: Iterable[str] = ()) -> None:
        """Refuse options the backend does not know, naming them and the allowed ones."""
        allowed = set(allowed)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            takes = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise ConfigurationError(
                f"queue {self.name!r}: unknown queue options {', '.join(unknown)} for the "
                f"{backend} backend; {takes}"
            )

    def check_priority(self, priority: int) -> int:
        """``priority`` if it is an int within this queue's ``0..max_priority``."""
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(
                f"priority={priority!r} is a {type(priority).__name__}: it must be an int "
                f"0..{self.max_priority} (the max_priority of queue {self.name!r})"
            )
        if not 0 <= priority <= self.max_priority:
            raise ValueError(
                f"priority={priority!r} is not allowed: it must be an int "
                f"0..{self.max_priority} (the max_priority of queue {self.name!r})"
            )
        return priority
