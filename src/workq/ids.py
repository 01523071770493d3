"""Message ids: 128 random bits as 32 hex digits."""

from __future__ import annotations

import os

__all__ = ["new_id", "new_ids"]


def new_id() -> str:
    """A fresh random message id: 128 random bits as 32 hex digits (as ``uuid4().hex``)."""
    return os.urandom(16).hex()


def new_ids(count: int) -> list[str]:
    """``count`` fresh ids as :func:`new_id` makes them, from one call to the OS."""
    raw = os.urandom(16 * count).hex()
    return [raw[i : i + 32] for i in range(0, 32 * count, 32)]
