"""moto's server, with SQS dropping messages past their retention period as AWS does.

moto ends a receive at the first expired message it meets and never removes it, so once
a queue's oldest message has expired unread, every later receive comes back empty
although newer messages wait. workq's doorbell notes live 60 s: a test run that left
one unread would see the doorbell fall silent, which AWS never does. Run as
``python -m workq.testing.brokers.moto_server -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["main"]


def _patch() -> None:
    from moto.sqs import models

    receive = models.SQSBackend.receive_message

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        queue = self.get_queue(queue_name)
        retention = float(queue.message_retention_period)
        now_ms = time.time() * 1000
        messages = queue._messages
        # Sent in order, so the expired ones lead; stop at the first that is not.
        expired = 0
        for message in messages:
            sent = message.sent_timestamp
            if sent is None or sent + retention * 1000 > now_ms:
                break
            expired += 1
        if expired:
            del messages[:expired]
        return receive(self, queue_name, *args, **kwargs)

    setattr(models.SQSBackend, "receive_message", receive_message)  # noqa: B010


def main() -> None:
    """Start moto's server (arguments as ``python -m moto.server``) with the fix."""
    _patch()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
