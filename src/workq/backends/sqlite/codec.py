"""How workq values map to sqlite columns: tenants, stored specs, message rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...driver import DeadLetter, Received
from ...lanes import Lane
from ...spec import QueueSpec

__all__ = ["dead_letter", "received", "spec_from", "spec_json", "tenant_col", "tenant_of"]


def tenant_col(tenant: str | None) -> str:
    """The tenant column's value: ``""`` for the default lane.

    Real tenant names cannot be empty, so ``""`` stands for the default lane and keeps
    the column NOT NULL (NULLs would defeat the primary key and the index).

    Example:
        ```python
        assert tenant_col(None) == "" and tenant_of("") is None
        ```
    """
    return tenant or ""


def tenant_of(col: str) -> str | None:
    """The tenant a tenant column's value stands for (``None`` for the default lane)."""
    return col or None


def spec_json(spec: QueueSpec) -> str:
    """The delivery rules a declaration stores: every QueueSpec setting (sqlite takes no
    backend options)."""
    return json.dumps({name: getattr(spec, name) for name in QueueSpec.SETTINGS})


def spec_from(name: str, text: str) -> QueueSpec:
    """The spec :func:`spec_json` stored for queue ``name``."""
    return QueueSpec(name, **json.loads(text))


def received(row: Sequence[Any], token: Any) -> Received:
    """A claimed row ``(queue, tenant, priority, id, body, headers, deliveries,
    enqueued_at)`` as a delivery."""
    queue, tenant, priority, mid, body, headers, deliveries, enqueued_at = row
    return Received(
        lane=Lane(queue, tenant_of(tenant), priority),
        id=mid,
        body=bytes(body),
        headers=json.loads(headers),
        attempt=deliveries,
        enqueued_at=enqueued_at,
        token=token,
    )


def dead_letter(queue: str, row: Sequence[Any]) -> DeadLetter:
    """A ``workq_dead`` row ``(id, tenant, priority, body, headers, reason, deliveries,
    enqueued_at)`` as a dead letter."""
    mid, tenant, priority, body, headers, reason, deliveries, enqueued_at = row
    item = received((queue, tenant, priority, mid, body, headers, deliveries, enqueued_at), None)
    return DeadLetter.of(item, reason)
