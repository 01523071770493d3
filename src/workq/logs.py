"""Logging for workq: structured fields on records and the CLI's formats.

workq's records carry, where they apply, ``queue``, ``message_id``, ``tenant``,
``attempt`` and ``outcome`` as record attributes (``extra=``), so any formatter can use
them; :class:`JsonFormatter` writes them as JSON fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["FIELDS", "JsonFormatter", "configure_logging"]

#: The structured fields workq puts on its records where they apply.
FIELDS = ("queue", "message_id", "tenant", "attempt", "outcome")

#: Client libraries whose reconnect chatter stays at WARNING or above.
NOISY = ("pika", "aio_pika", "aiormq", "botocore", "boto3", "urllib3", "confluent_kafka")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, workq's fields, error.

    >>> import logging
    >>> r = logging.LogRecord("workq", logging.INFO, "", 0, "hi %s", ("there",), None)
    >>> r.queue = "reports"
    >>> JsonFormatter().format(r)  # doctest: +ELLIPSIS
    '{"time": "...", "level": "INFO", "logger": "workq", "message": "hi there", "queue": "reports"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value.value if hasattr(value, "value") else value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(fmt: str = "text", level: str | int = "INFO", *, force: bool = False) -> bool:
    """Set up the root logger for a workq process, unless the application already did.

    :param fmt: ``"text"`` (human lines on stderr) or ``"json"`` (one object per line).
    :param level: a logging level name or number.
    :param force: configure even if the root logger has handlers.
    :returns: True if logging was configured here.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: use 'text' or 'json'")
    if isinstance(level, str):
        name = level.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ValueError(
                f"log level {level!r}: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
        level = name
    root = logging.getLogger()
    if root.handlers and not force:
        return False
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY:
        lib = logging.getLogger(name)
        if lib.getEffectiveLevel() < logging.WARNING:
            lib.setLevel(logging.WARNING)
    return True
