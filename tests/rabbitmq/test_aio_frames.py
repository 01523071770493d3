"""The ack frames the async receiver writes itself are byte for byte pamqp's own."""

from __future__ import annotations

import pamqp.commands
import pamqp.frame
import pytest

from workq.backends.rabbitmq.aio_receiver import ack_frame

pytestmark = pytest.mark.rabbitmq


@pytest.mark.parametrize(("channel", "tag"), [(1, 1), (7, 2**40 + 5), (65535, 2**63 - 1)])
def test_ack_frame_is_pamqps(channel: int, tag: int) -> None:
    expected = pamqp.frame.marshal(pamqp.commands.Basic.Ack(delivery_tag=tag), channel)
    assert ack_frame(channel, tag) == expected
