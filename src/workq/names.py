"""Validation of queue and tenant names, shared by every backend."""

from __future__ import annotations

import re

from .errors import ConfigurationError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_tenant(tenant: str | None) -> str | None:
    """Return ``tenant`` if valid (``None`` is the default lane), else raise ``ValueError``."""
    if tenant is None:
        return None
    if not isinstance(tenant, str) or not NAME_PATTERN.fullmatch(tenant):
        raise ValueError(
            f"invalid tenant name {tenant!r}: tenant names must match [A-Za-z0-9_-]{{1,64}}"
        )
    return tenant


def check_queue(name: str) -> str:
    """Return ``name`` if it is a valid queue name, else raise ``ConfigurationError``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"invalid queue name {name!r}: queue names must match [A-Za-z0-9_-]{{1,64}}"
        )
    return name
