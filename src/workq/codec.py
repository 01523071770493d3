"""The body codec, once for every backend: how a published body becomes bytes and a
content type, and how one message becomes the :class:`~workq.driver.Outgoing` a driver
publishes. Drivers see only bytes and string headers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from .checks import check_headers, check_message_id, check_seconds
from .driver import Outgoing
from .ids import new_id
from .lanes import Lane

__all__ = ["BYTES", "CONTENT_TYPE", "JSON", "TEXT", "build_outgoing", "encode_body"]

#: The header naming a body's content type (set on publish unless the user set it).
CONTENT_TYPE = "content-type"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BYTES = "application/octet-stream"


def encode_body(body: Any) -> tuple[bytes, str]:
    """Encode a body as bytes and name its content type.

    Raises:
        TypeError: The body is of no accepted type, or a dict or list that is not JSON-able.

    Examples:
        >>> encode_body({"a": 1})
        (b'{"a":1}', 'application/json')
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), BYTES
    if isinstance(body, str):
        return body.encode(), TEXT
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode(), JSON
    if isinstance(body, dict | list):
        try:
            return json.dumps(body, separators=(",", ":")).encode(), JSON
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"message body is a {type(body).__name__} that is not JSON-able: {exc}"
            ) from exc
    raise TypeError(
        f"cannot publish a body of type {type(body).__name__}: use bytes, str, "
        "a JSON-able dict or list, or a pydantic model"
    )


def build_outgoing(
    spec_name: str,
    body: Any,
    *,
    tenant: str | None,
    priority: int,
    headers: Mapping[str, str] | None,
    delay: float | None,
    message_id: str | None,
) -> Outgoing:
    """Encode one message for a driver. Validation of lanes is the caller's."""
    all_headers = check_headers(headers)
    delay = check_seconds("delay", delay, optional=True)
    message_id = check_message_id(message_id)
    data, content_type = encode_body(body)
    all_headers.setdefault(CONTENT_TYPE, content_type)
    return Outgoing(
        lane=Lane(spec_name, tenant, priority),
        id=message_id or new_id(),
        body=data,
        headers=all_headers,
        delay=delay or None,
    )
