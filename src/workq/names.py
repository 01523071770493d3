"""Validation of queue and tenant names, shared by every backend."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = ["NAME_PATTERN", "check_queue", "check_tenant", "check_tenants"]

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


def check_tenants(tenants: object) -> frozenset[str | None] | None:
    """A consumer's ``tenants``: None (every tenant) or a collection of tenant names."""
    if tenants is None:
        return None
    if isinstance(tenants, str | bytes) or not isinstance(tenants, Iterable):
        raise TypeError(
            f"tenants={tenants!r} is a {type(tenants).__name__}: it must be a list of "
            "tenant names, or None for every tenant"
        )
    return frozenset(check_tenant(t) for t in tenants)
