"""``workq.Outcome``: the one vocabulary for what happened to a delivery.

>>> Outcome.DEAD_LETTER.value
'dead_letter'
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Outcome"]


class Outcome(StrEnum):
    """How a delivery ended: the same four words in decisions, hooks, logs and metrics.

    - ``ACK``: done, removed for good.
    - ``RETRY``: put back to be delivered again (a nack, maybe with a delay).
    - ``DEAD_LETTER``: moved to the dead-letter queue (rejected, or out of attempts).
    - ``RELEASE``: given back unprocessed (shutdown, outage); not counted as an attempt.
    """

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    RELEASE = "release"
