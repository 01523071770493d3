"""Deprecated: where ``Message``, ``Outgoing`` and ``Received`` were imported from before
the core was split by role.

``Message`` is ``workq.Message`` (defined in ``workq.message``); a backend takes
``Outgoing`` and ``Received`` from ``workq.driver``, beside the rest of the driver
interface. The names still import from here, with a ``DeprecationWarning``; this module
will be removed in a later release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .driver import Outgoing, Received
    from .message import Message

__all__ = ["Message", "Outgoing", "Received"]

_MOVED = {"Message": "workq.message", "Outgoing": "workq.driver", "Received": "workq.driver"}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'workq.messages' has no attribute {name!r}")
    new = "workq.Message" if name == "Message" else f"{_MOVED[name]}.{name}"
    warnings.warn(
        f"workq.messages.{name} moved: import {new} instead", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
