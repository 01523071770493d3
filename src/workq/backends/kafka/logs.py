"""Log throttling for the Kafka backend: a broker outage must not flood the logs.

While a broker is down, librdkafka reports the same connection error on every poll and
every reconnect attempt (thousands of lines a minute). :class:`Throttle` lets the first
of a kind through, then one line per ``interval`` saying how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["ClientLogFilter", "Throttle", "client_logger"]


class Throttle:
    """Decides whether a message of a given kind may be logged now.

    Example::

        throttle = Throttle(30.0)
        allowed, suppressed = throttle.allow("_TRANSPORT")
        if allowed:
            log.warning("broker down (%d more suppressed)", suppressed)
    """

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, kind: str) -> tuple[bool, int]:
        """Whether to log ``kind`` now, and how many of it were held back since the last."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False, 0
            self._last[kind] = now
            return True, self._suppressed.pop(kind, 0)


class ClientLogFilter(logging.Filter):
    """Throttles librdkafka's own log lines (given to the client as ``logger``).

    Lines are grouped by their librdkafka facility (FAIL, REQTMOUT...) and level.
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self._throttle = Throttle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        # The client logs ("%s [%s] %s", facility, client name, text).
        facility = str(args[0]) if args else record.getMessage()[:40]
        allowed, suppressed = self._throttle.allow(f"{record.levelno}:{facility}")
        if allowed and suppressed:
            record.msg = f"{record.msg} ({suppressed} similar lines suppressed)"
        return allowed


def client_logger() -> logging.Logger:
    """The logger given to confluent-kafka clients, with :class:`ClientLogFilter` on it."""
    logger = logging.getLogger("workq.kafka.client")
    if not any(isinstance(f, ClientLogFilter) for f in logger.filters):
        logger.addFilter(ClientLogFilter())
    return logger
