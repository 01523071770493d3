"""Argument checks shared by the sync and async APIs, run before any I/O.

Each check returns the value (normalised where that helps) or raises ``TypeError`` (wrong
type) or ``ValueError`` (right type, value not allowed); the message names the argument,
the value given and what is allowed.

>>> check_seconds("delay", 1)
1.0
>>> check_seconds("delay", float("nan"))
Traceback (most recent call last):
ValueError: delay=nan is not allowed: it must be a finite number of seconds >= 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import Closed

__all__ = [
    "META_PREFIX",
    "Gate",
    "check_bool",
    "check_callable",
    "check_headers",
    "check_int",
    "check_message_id",
    "check_seconds",
    "check_timeout",
]

T = TypeVar("T")

#: Header names starting with this are workq's own metadata, for drivers that carry it
#: in headers (Kafka, SQS attributes). Users' headers must not use it.
META_PREFIX = "x-workq-"


def _kind(value: object) -> str:
    return type(value).__name__


def check_seconds(
    name: str, value: Any, *, optional: bool = False, positive: bool = False
) -> float | None:
    """A duration: a finite real number of seconds, ``>= 0`` (``> 0`` if ``positive``).

    ``None`` passes when ``optional``. Returns the value as a float.
    """
    bound = "> 0" if positive else ">= 0"
    rule = f"it must be a finite number of seconds {bound}" + (" (or None)" if optional else "")
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name}=None is not allowed: {rule}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r} is a {_kind(value)}: {rule}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{name}={value!r} is not allowed: {rule}")
    return seconds


def check_timeout(name: str, value: Any) -> float | None:
    """A timeout: ``None`` (wait as long as it takes) or finite seconds ``>= 0``."""
    return check_seconds(name, value, optional=True)


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` and nothing else (not 0, 1, ``"yes"`` or ``"maybe"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} is a {_kind(value)}: it must be True or False")
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An int (not a bool) within ``minimum..maximum``."""
    allowed = f"an int {minimum}..{maximum}" if maximum is not None else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} is a {_kind(value)}: it must be {allowed}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value!r} is not allowed: it must be {allowed}")
    return value


def check_message_id(value: Any) -> str | None:
    """``None`` (workq makes an id) or a non-empty str."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"message_id={value!r} is a {_kind(value)}: it must be a non-empty str, or None "
            "for a generated id"
        )
    if not value:
        raise ValueError("message_id='' is not allowed: give a non-empty str, or None")
    return value


def check_headers(headers: Any) -> dict[str, str]:
    """A copy of user headers: a mapping of str to str, not using workq's reserved prefix."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"headers={headers!r} is a {_kind(headers)}: it must be a mapping of str names "
            "to str values, e.g. {'trace': 'abc'}"
        )
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"header {key!r}={value!r}: header names and values must be str "
                "(convert numbers with str())"
            )
        if key.lower().startswith(META_PREFIX):
            raise ValueError(f"header {key!r}: names starting with {META_PREFIX!r} are reserved")
        out[key] = value
    return out


def check_callable(name: str, value: T) -> T:
    """Something that can be called, such as a function."""
    if not callable(value):
        raise TypeError(
            f"{name}={value!r} is a {_kind(value)}, not callable: pass a function "
            "that takes a delivery"
        )
    return value


class Gate:
    """Whether a broker, producer or consumer is still open, and the one it hangs off.

    ``check(call)`` raises :class:`~workq.errors.Closed` once this object or its parent
    (a producer's or consumer's broker) is closed.

    >>> broker = Gate("broker")
    >>> producer = Gate("producer", broker)
    >>> broker.close()
    >>> producer.check("publish")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    workq.errors.Closed: cannot publish: its broker is closed...
    """

    __slots__ = ("closed", "parent", "what")

    def __init__(self, what: str, parent: Gate | None = None) -> None:
        self.what = what
        self.parent = parent
        self.closed = False

    @property
    def is_open(self) -> bool:
        return not self.closed and (self.parent is None or self.parent.is_open)

    def close(self) -> bool:
        """Mark closed; True the first time (so that only the first close does the work)."""
        first = not self.closed
        self.closed = True
        return first

    def check(self, call: str) -> None:
        """Raise ``Closed`` naming ``call`` if this object or its parent is closed."""
        if self.parent is not None and not self.parent.is_open:
            raise Closed(
                self.what,
                call,
                f"its {self.parent.what} is closed; connect again and open a new {self.what}",
            )
        if self.closed:
            raise Closed(self.what, call)
