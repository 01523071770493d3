"""How a workq message is laid out in an SQS message (no client library imported here).

SQS bodies are text limited to the XML character set, and a message may carry at most
10 attributes, so:

- the body goes as text when it is UTF-8 of allowed characters, else base64;
- each header (``content-type``, ``traceparent``, the user's own) is a String message
  attribute of its own, so plain SQS consumers read them, up to 9 of them; headers beyond
  that, and those SQS cannot carry as attributes (names outside
  ``[A-Za-z0-9_.-]``, starting ``AWS.``/``Amazon.``, empty values), are packed into
  the ``workq`` attribute;
- workq's own metadata (id, tenant, priority, enqueued-at, attempt base, not-before,
  dead-letter reason) is one JSON string attribute ``workq``.

A message without the ``workq`` attribute (a plain producer's) maps from SQS's own
fields: ``MessageId`` → id, ``MessageAttributes`` → headers (String and Number values
as they are, Binary ones base64), ``SentTimestamp`` → enqueued_at and
``ApproximateReceiveCount`` → attempt.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ...codec import CONTENT_TYPE
from ...driver import Outgoing, Received
from ...lanes import Lane

__all__ = [
    "MAX_DELAY",
    "MAX_MESSAGE",
    "MAX_VISIBILITY",
    "SYSTEM_ATTRIBUTES",
    "Meta",
    "attributes",
    "decode_body",
    "encode_body",
    "message_size",
    "outgoing_meta",
    "received",
    "whole_seconds",
]

ATTRIBUTE = "workq"
#: SQS's limit on message attributes per message.
MAX_ATTRIBUTES = 10
#: SQS's limit on one message, body and attributes together.
MAX_MESSAGE = 262144
MAX_DELAY = 900
MAX_VISIBILITY = 43200
#: What a receive asks SQS for besides the body and message attributes.
SYSTEM_ATTRIBUTES: list[Any] = ["ApproximateReceiveCount", "SentTimestamp"]

_ATTRIBUTE_NAME = re.compile(r"(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}")
_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def whole_seconds(seconds: float | None, cap: int) -> int:
    """Seconds rounded up (never early), within ``0..cap``."""
    if not seconds or seconds <= 0:
        return 0
    return min(math.ceil(seconds - 1e-9), cap)


def encode_body(body: bytes) -> tuple[str, str]:
    """(SQS body text, encoding tag): ``t`` text, ``b`` base64, ``e`` empty."""
    if not body:
        return "-", "e"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "b"
    if _INVALID.search(text):
        return base64.b64encode(body).decode("ascii"), "b"
    return text, "t"


def decode_body(text: str, encoding: str) -> bytes:
    if encoding == "e":
        return b""
    if encoding == "b":
        return base64.b64decode(text)
    return text.encode("utf-8")


@dataclass(slots=True)
class Meta:
    """workq's metadata of one SQS message."""

    id: str
    tenant: str | None
    priority: int
    headers: dict[str, str]
    enqueued_at: float
    encoding: str = "t"
    attempt_base: int = 0
    not_before: float | None = None
    reason: str | None = None
    dead_attempt: int | None = None
    dead_at: float | None = None

    def dump(self, headers: dict[str, str]) -> str:
        """The ``workq`` attribute, carrying ``headers`` (those not sent on their own)."""
        data: dict[str, Any] = {
            "id": self.id,
            "p": self.priority,
            "ea": self.enqueued_at,
            "enc": self.encoding,
        }
        if headers:
            data["h"] = headers
        if self.tenant is not None:
            data["t"] = self.tenant
        if self.attempt_base:
            data["ab"] = self.attempt_base
        if self.not_before is not None:
            data["nb"] = self.not_before
        if self.reason is not None:
            data["reason"] = self.reason
            data["da"] = self.dead_attempt
            data["dt"] = self.dead_at
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def load(cls, message: Any) -> Meta:
        """The metadata of a received SQS message; a foreign one's from SQS's fields."""
        attrs = message.get("MessageAttributes") or {}
        raw = attrs.get(ATTRIBUTE, {}).get("StringValue")
        headers = {
            name: _attribute_text(value) for name, value in attrs.items() if name != ATTRIBUTE
        }
        if raw is None:
            system = message.get("Attributes") or {}
            sent = float(system.get("SentTimestamp", 0)) / 1000 or time.time()
            return cls(message["MessageId"], None, 0, headers, sent)
        data = json.loads(raw)
        headers.update({str(k): str(v) for k, v in (data.get("h") or {}).items()})
        return cls(
            id=str(data["id"]),
            tenant=data.get("t"),
            priority=int(data.get("p", 0)),
            headers=headers,
            enqueued_at=float(data.get("ea", 0.0)),
            encoding=str(data.get("enc", "t")),
            attempt_base=int(data.get("ab", 0)),
            not_before=data.get("nb"),
            reason=data.get("reason"),
            dead_attempt=data.get("da"),
            dead_at=data.get("dt"),
        )

    def lane(self, queue: str) -> Lane:
        return Lane(queue, self.tenant, self.priority)


def _attribute_text(value: Any) -> str:
    if value.get("DataType", "").startswith("Binary"):
        return base64.b64encode(value.get("BinaryValue", b"")).decode("ascii")
    return str(value.get("StringValue", ""))


def _own_attribute(name: str, value: str) -> bool:
    """Whether SQS can carry this header as a message attribute of its own."""
    return (
        bool(value)
        and name != ATTRIBUTE
        and _ATTRIBUTE_NAME.fullmatch(name) is not None
        and not name.lower().startswith(("aws.", "amazon."))
        and _INVALID.search(value) is None
    )


def attributes(meta: Meta) -> dict[str, Any]:
    """The message attributes of a workq message: one per header, the rest packed."""
    own: dict[str, Any] = {}
    packed: dict[str, str] = {}
    # The content type first: plain consumers need it most.
    items = sorted(meta.headers.items(), key=lambda kv: kv[0] != CONTENT_TYPE)
    for name, value in items:
        if len(own) < MAX_ATTRIBUTES - 1 and _own_attribute(name, value):
            own[name] = {"DataType": "String", "StringValue": value}
        else:
            packed[name] = value
    own[ATTRIBUTE] = {"DataType": "String", "StringValue": meta.dump(packed)}
    return own


def message_size(body: str, attrs: dict[str, Any]) -> int:
    """Bytes SQS counts against its limit: body plus each attribute's name, type, value."""
    size = len(body.encode())
    for name, value in attrs.items():
        size += len(name) + len(value["DataType"]) + len(value["StringValue"].encode())
    return size


def outgoing_meta(msg: Outgoing, encoding: str, now: float) -> Meta:
    return Meta(
        id=msg.id,
        tenant=msg.lane.tenant,
        priority=msg.lane.priority,
        headers=dict(msg.headers),
        enqueued_at=msg.enqueued_at,
        encoding=encoding,
        attempt_base=max(msg.attempt - 1, 0),
        not_before=now + msg.delay if msg.delay and msg.delay > MAX_DELAY else None,
    )


def received(lane: Lane, message: Any, meta: Meta, token: Any, released: int = 0) -> Received:
    count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
    return Received(
        lane=lane,
        id=meta.id,
        body=decode_body(message["Body"], meta.encoding),
        headers=dict(meta.headers),
        attempt=max(meta.attempt_base + count - released, 1),
        enqueued_at=meta.enqueued_at,
        token=token,
    )
